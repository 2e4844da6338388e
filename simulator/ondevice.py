"""Tools the simulator runs *on* a device (``python3 -m edgeward.simulator.ondevice ...``).

The same commands run in a process-mode device's folder and inside a QEMU guest, so a scenario
is one thing in both modes:

* ``tamper-model NAME``: flip one byte in the middle of ``models/NAME.tflite`` (an attacker with
  write access to the disk);
* ``restore-model NAME``: put the genuine model back (a repair);
* ``extend-pcr N``: extend PCR N of the device's TPM as another bootloader would;
* ``guard-burst --seed S --clean C --ood O --adversarial A``: an application that runs the
  guarded model on clean digits, out-of-distribution inputs (noise, inverted digits) and FGSM
  adversarial examples, sending the guard's early-warning events to the agent's local socket,
  and printing the scores and thresholds as JSON (for the report's plots).

Paths come from AGENT.toml (``--config``, default ``$EDGEWARD_CONFIG`` or ``agent.toml``). I/O:
the device's files, its TPM, the agent's socket.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def tamper_model(cfg_path: Path, name: str) -> str:
    path = cfg_path.parent / "models" / f"{name}.tflite"
    data = bytearray(path.read_bytes())
    backup = cfg_path.parent / "sim-backup"
    backup.mkdir(exist_ok=True)
    (backup / path.name).write_bytes(bytes(data))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"flipped byte {len(data) // 2} of {path.name}"


def restore_model(cfg_path: Path, name: str) -> str:
    """Put back the genuine model saved by :func:`tamper_model` (a repair by the vendor)."""
    path = cfg_path.parent / "models" / f"{name}.tflite"
    saved = cfg_path.parent / "sim-backup" / path.name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(saved.read_bytes())
    os.replace(tmp, path)
    return f"genuine {path.name} restored"


def extend_pcr(cfg_path: Path, pcr: int) -> str:
    from edgeward.attestation.config import load_attester_config
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    cfg = load_attester_config(cfg_path)
    with TpmSigner(cfg.tpm_tcti, ak_handle=cfg.tpm_ak_handle) as tpm:
        tpm.extend_pcr(pcr, hashlib.sha256(b"an unexpected bootloader").digest())
        value = tpm.read_pcrs([pcr])[pcr]
    return f"PCR {pcr} extended, now {value.hex()[:16]}"


def _fgsm(content: bytes, x: Any, eps: float) -> Any:
    """FGSM (Goodfellow et al. 2015) on the MLP, gradients from the weights in the .tflite."""
    import numpy as np

    from edgeward.models.tflite import tensor_data, validate

    s = validate(content)
    w = {t.name: np.asarray(tensor_data(content, s, t.index), dtype=np.float64)
         for t in s.tensors if t.data_offset >= 0}
    layers: list[tuple[Any, Any]] = []
    while f"dense_{len(layers)}/weights" in w:
        k = len(layers)
        layers.append((w[f"dense_{k}/weights"], w[f"dense_{k}/bias"]))
    h, acts = x.reshape(len(x), -1).astype(np.float64), []
    for i, (wd, bd) in enumerate(layers):
        acts.append(h)
        h = h @ wd.T + bd
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    y = h.argmax(1)
    p = np.exp(h - h.max(1, keepdims=True))
    g = p / p.sum(1, keepdims=True)
    g[np.arange(len(x)), y] -= 1.0
    for i in range(len(layers) - 1, -1, -1):
        g = g @ layers[i][0]
        if i > 0:
            g = g * (acts[i] > 0)
    return np.clip(x + eps * np.sign(g.reshape(x.shape)), 0, 1).astype(np.float32)


def guard_burst(cfg_path: Path, seed: int, clean: int, ood: int,
                adversarial: int) -> dict[str, Any]:
    import numpy as np

    from edgeward.agent.config import load_agent_config
    from edgeward.core.keys import TrustStore
    from edgeward.models import guard as g
    from edgeward.models.integrity import verify_model
    from edgeward.models.runtime import load_interpreter

    cfg = load_agent_config(cfg_path)
    if cfg.local.socket is None or cfg.models.trust is None or not cfg.models.model:
        raise SystemExit("AGENT.toml has no [local] socket, [models] trust or model")
    model = cfg.models.model[0].path
    trust = TrustStore.from_path(cfg.models.trust)
    vm = verify_model(model, trust)
    profile_data = model.with_suffix(".guard").read_bytes()
    assert vm.manifest is not None
    g.check_manifest_binding(profile_data, vm.manifest.profile_sha256)
    profile = g.open_profile(profile_data, model_sha256=vm.sha256, trust=trust)
    link = g.AgentLink(str(cfg.local.socket), retry_s=0.2)
    guarded = g.GuardedInterpreter(load_interpreter(vm.content, preserve_all_tensors=True),
                                   profile, link=link)
    rng = np.random.default_rng(seed)
    saved = cfg_path.parent / "sim-inputs" / "digits.npy"  # provisioned with the device
    if saved.is_file():
        held = np.load(saved, allow_pickle=False).astype(np.float32)
    else:
        from edgeward.models.refmodels.data import load_digits_split

        held = load_digits_split()[2][300:].astype(np.float32)
    pick = held[rng.choice(len(held), size=max(clean, adversarial, ood // 2 + 1),
                           replace=False)]
    inputs: list[tuple[str, Any]] = [("clean", x) for x in pick[:clean]]
    n_noise = ood - ood // 2
    inputs += [("ood", x) for x in rng.uniform(0, 1, (n_noise, *held.shape[1:]))
               .astype(np.float32)]
    inputs += [("ood", (1.0 - x).astype(np.float32)) for x in pick[: ood // 2]]
    if adversarial:
        inputs += [("adversarial", x) for x in _fgsm(vm.content, pick[:adversarial], 0.3)]
    order = rng.permutation(len(inputs))
    samples = []
    for i in order:
        kind, x = inputs[int(i)]
        v = guarded.invoke(x).verdict
        samples.append({"kind": kind, "combined": float(v.scores.get("combined", 0.0)),
                        "flagged": bool(v.flagged), "severity": v.severity})
    deadline = time.monotonic() + 5  # the agent may be away for a moment: let the link retry
    while link.pending and time.monotonic() < deadline:
        link.flush()
        time.sleep(0.1)
    guarded.close()
    thr = profile.threshold
    return {"model": model.name, "threshold": float(thr), "samples": samples,
            "sent": link.sent, "dropped": link.dropped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m edgeward.simulator.ondevice")
    ap.add_argument("--config", type=Path,
                    default=Path(os.environ.get("EDGEWARD_CONFIG", "agent.toml")))
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tamper-model")
    t.add_argument("model")
    r = sub.add_parser("restore-model")
    r.add_argument("model")
    e = sub.add_parser("extend-pcr")
    e.add_argument("pcr", type=int, choices=range(24))
    b = sub.add_parser("guard-burst")
    b.add_argument("--seed", type=int, default=0)
    for k, d in (("clean", 10), ("ood", 20), ("adversarial", 20)):
        b.add_argument(f"--{k}", type=int, default=d)
    a = ap.parse_args(argv)
    cfg = a.config.resolve()
    if a.cmd == "tamper-model":
        print(tamper_model(cfg, a.model))
    elif a.cmd == "restore-model":
        print(restore_model(cfg, a.model))
    elif a.cmd == "extend-pcr":
        print(extend_pcr(cfg, a.pcr))
    else:
        print(json.dumps(guard_burst(cfg, a.seed, a.clean, a.ood, a.adversarial)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
