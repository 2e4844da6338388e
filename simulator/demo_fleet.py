"""``edgeward demo``, the last steps: remote attestation (:mod:`.demo_attest`), then the fleet.

The fleet: a real Mosquitto on loopback with TLS client certificates and the shipped
``deploy/mosquitto.conf``, ``deploy/dynamic-security.json`` and ``deploy/acl``, the verifier
service and the device agent, each from its own TOML file. The agent comes online, reports
without gaps and is attested affirming; a model replaced on disk is reported
(``model.rejected``) and the next attestation is contraindicated. Everything is stopped at the
end, and the fleet store is summarised.
Everything runs on 127.0.0.1, on free ports, under ``out``; processes are always stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeward.simulator.demo_attest import (
    BOARD,
    MODELS,
    Vendor,
    agent_toml,
    flip_byte,
    run_attestation,
    run_tpm,
    vector_text,
)
from edgeward.simulator.steps import DemoFailed, info, ok, step, wait


def _start(stack: contextlib.ExitStack, name: str, run: Callable[[], object],
           stop: Callable[[], object]) -> threading.Thread:
    """Run ``run`` in a thread; on leaving ``stack``, ``stop`` it and wait for it."""
    th = threading.Thread(target=run, name=name, daemon=True)
    th.start()

    def halt() -> None:
        stop()
        th.join(15)
        if th.is_alive():
            raise DemoFailed(f"the {name} did not stop")

    stack.callback(halt)
    return th


def _fleet_files(root: Path, vendor: Vendor, broker: Any, ca: Any, dev: str) -> tuple[Path, Path]:
    """The device's AGENT.toml and the backend's VERIFIER.toml, as an operator writes them."""
    from edgeward.core import keys

    folder = root / dev
    dkey = keys.generate("ed25519")
    keys.write_keypair(folder / "device", dkey)
    vendor.device(folder, dev, dkey.public)
    tls, vtls = ca.issue(dev), ca.issue("edgeward-verifier-w1")
    cmd_priv, cmd_pub = keys.write_keypair(root / "command-key", keys.generate("ed25519"))
    _, ear_pub = keys.write_keypair(root / "ear-key", keys.generate("ed25519"))
    trust = folder / "backend-keys"  # the command key only: EARs have their own trust store
    trust.mkdir()
    shutil.copy(cmd_pub, trust / "command.pem")
    shutil.copy(ear_pub, folder / "verifier-ear.pem")
    mqtt = (f'host = "127.0.0.1"\nport = {broker.port}\nca = "{ca.ca}"\nkeepalive = 5\n'
            "backoff_base = 0.1\nbackoff_cap = 1.0\n")
    models = "".join(f'\n[[models.model]]\npath = "models/{m}.tflite"\nname = "{m}"\n'
                     for m in MODELS)
    agent = agent_toml(folder, dev, board=BOARD, key="software",
                       verifier_key=folder / "verifier-ear.pem", extra=(
        f'\n[agent]\nstate_dir = "state"\n\n[mqtt]\n{mqtt}cert = "{tls.cert}"\n'
        f'key = "{tls.key}"\n\n[metrics]\ninterval = 0.5\n\n[commands]\ntrust = "{trust}"\n'
        f'\n[models]\ntrust = "{vendor.out / "keys" / "public.pem"}"\nstate_dir = "state/models"'
        f"\ncheck_interval = 0.2\n{models}"))
    (root / "refvalues").mkdir()
    verifier = root / "verifier.toml"
    verifier.write_text(
        f'[service]\nworker = "w0"\nstore = "fleet.sqlite"\ntick = 0.1\n\n[mqtt]\n{mqtt}'
        f'cert = "{vtls.cert}"\nkey = "{vtls.key}"\n\n[commands]\n'
        f'key = "{cmd_priv}"\n\n[verifier]\n'
        f'database = "verifier.sqlite"\nkey_file = "ear-key/private.pem"\n'
        f'policy_id = "acme-locks/2026-1"\n\n[enrollment]\nmaker_cas = ["{vendor.ca_path}"]\n\n'
        f'[refvalues]\nvendor_keys = "{vendor.out / "keys" / "public.pem"}"\ndir = "refvalues"\n'
        # the demo's devices have software keys; the default policy makes that a warning
        '\n[policy]\nsoftware_keys = "affirming"\n')
    return agent, verifier


def _run_fleet_steps(root: Path, n: int, vendor: Vendor) -> None:
    from edgeward.agent.compose import build_agent
    from edgeward.agent.config import load_agent_config
    from edgeward.attestation.config import load_attester_config
    from edgeward.attestation.ear import check_ear
    from edgeward.attestation.service.appraise import AttestationAppraiser
    from edgeward.attestation.service.config import load_service_config
    from edgeward.attestation.service.fleet_store import FleetStore
    from edgeward.attestation.service.service import VerifierService
    from edgeward.core.keys import load_signing_key
    from edgeward.simulator.devbroker import DevCA, Mosquitto

    dev = "lock-0002"
    step(n, "The fleet over MQTT: broker, verifier service and device agent on loopback")
    ca = DevCA(root / "fleet-ca", name="Acme Locks Fleet CA")
    (root / "broker").mkdir()
    broker = Mosquitto(root / "broker", ca)
    agent_path, verifier_path = _fleet_files(root, vendor, broker, ca, dev)
    signed, _ = vendor.refvalues(load_attester_config(agent_path), board=BOARD)
    (root / "refvalues" / f"{BOARD}.ewref").write_bytes(signed)
    with contextlib.ExitStack() as stack:  # stopped in reverse: agent, service, broker
        try:
            broker.start()
        except RuntimeError as e:
            raise DemoFailed(f"mosquitto did not start: {e}") from e
        stack.callback(broker.stop)
        ok(f"mosquitto on 127.0.0.1:{broker.port}: TLS only, client certificates from a "
            "throwaway fleet CA, CN = user name = client id, shipped deploy/mosquitto.conf, "
            "dynamic-security plugin with deploy/acl")
        cfg = load_service_config(verifier_path)
        assert cfg.verifier is not None  # read in the same parse as the service's tables
        appraiser = AttestationAppraiser.from_config(cfg.verifier)
        stack.callback(appraiser.close)
        assert cfg.command_key is not None
        svc = VerifierService(cfg, appraiser=appraiser,
                              command_key=load_signing_key(cfg.command_key))
        _start(stack, "verifier service", svc.run, svc.request_stop)
        if not svc.transport.wait_connected(10):
            raise DemoFailed("the verifier service did not connect to the broker")
        ok(f"verifier service {cfg.worker} connected as edgeward-verifier-w1; reference values "
            f"{BOARD}.ewref (vendor-signed), {vendor.ca_path.relative_to(vendor.out)} trusted")
        agent = build_agent(load_agent_config(agent_path))
        ath = _start(stack, "agent", lambda: agent.run(install_signals=False), agent.request_stop)
        store = svc.store
        wait("the agent's birth", lambda: store.status(dev) == "online")
        ok(f"{dev} online: retained birth on edgeward/v1/{dev}/status (last will: offline)")
        # security events go out before metrics, so a gap may be open for a moment
        wait("three metrics reports and no gap", lambda: len(
            store.messages(dev, "metrics")) >= 3 and not store.gaps(dev).missing)
        seqs = [s for s, _t, _b in store.messages(dev)]
        ok(f"reports at the backend, seq {seqs[0]}..{seqs[-1]} without gaps: "
            + ", ".join(f"{t} {c}" for t, c in Counter(t for _s, t, _b in
                                                      store.messages(dev)).items()))

        def done() -> list[str]:
            return [r[2] for r in store.appraisals(dev) if r[2] != "pending"]

        def latest_ear() -> Any:
            return check_ear(appraiser.verifier.store.history(dev, 1)[0][2],
                             appraiser.verifier.public_key, now=time.time(), max_age=60,
                             device=dev)

        first = wait("the first attestation result", done)
        if first != ["affirming"]:
            raise DemoFailed(f"the device was not attested affirming: {first}")
        ear = latest_ear()
        ok(f"challenged on connect -> evidence -> EAR {ear.status_name} on "
            f"edgeward/v1/{dev}/attest/result; AR4SI: {vector_text(ear)}")

        step(n + 1, "Fleet attack: a model replaced on the device's disk")
        flip_byte(root / dev / "models" / "digits_mlp.tflite")
        info(f"one byte of {dev}'s models/digits_mlp.tflite changed on disk")
        rejected = wait("model.rejected", lambda: store.messages(dev, "model.rejected"))
        body = rejected[0][2]
        ok(f"agent: event model.rejected (seq {rejected[0][0]}): {body.get('error')}: "
            f"{body.get('reason')}")
        second = wait("the next attestation result", lambda: done()[1:])
        if second[0] != "contraindicated":
            raise DemoFailed(f"the tampered device was {second[0]}, not contraindicated")
        ear = latest_ear()
        why = [r for r in ear.reasons if "digits_mlp" in r]
        ok(f"backend re-challenged on model.rejected -> EAR {ear.status_name} (file-system "
            f"{ear.vector.file_system}): " + (why[0] if why else "; ".join(ear.reasons)))

        step(n + 2, "Stop the fleet cleanly and summarise the fleet store")
        agent.request_stop()
        ath.join(15)
        wait("the agent's offline status", lambda: store.status(dev) == "offline", 10)
        ok(f"agent stopped: outbox delivered, {dev} offline")
    ok(f"verifier service and mosquitto stopped (log {broker.log.relative_to(root.parent)})")
    with contextlib.closing(FleetStore(root / "fleet.sqlite")) as fleet:
        msgs = fleet.messages(dev)
        gaps = fleet.gaps(dev)
        counts = Counter(t for _s, t, _b in msgs)
        ok(f"fleet store {fleet.path.name}: {dev} {fleet.status(dev)}, {len(msgs)} messages: "
            + ", ".join(f"{t} {c}" for t, c in sorted(counts.items())))
        ok(f"seq 1..{gaps.highest}: {gaps.received} received, gaps: "
            + ("none" if not gaps.missing else f"{gaps.missing} (unexplained "
               f"{gaps.unexplained})"))
        ok("attestation results: " + ", ".join(r[2] for r in fleet.appraisals(dev)))
        if gaps.unexplained or counts["model.rejected"] < 1:
            raise DemoFailed("the fleet store does not show what happened")


def run_fleet(out: Path, step_start: int) -> None:
    """Steps ``step_start`` on: attestation (software key, then TPM), then the fleet."""
    from edgeward.simulator.devbroker import mosquitto_binary

    out = out.resolve()  # the TOML files below name paths relative to their own folder
    vendor = Vendor.create(out)
    run_attestation(out, step_start, vendor)
    run_tpm(out, step_start + 1, vendor)
    if mosquitto_binary() is None:
        step(step_start + 2, "The fleet over MQTT")
        info("skipped: mosquitto is not installed (make demo installs it)")
        return
    (out / "fleet").mkdir()
    _run_fleet_steps(out / "fleet", step_start + 2, vendor)
