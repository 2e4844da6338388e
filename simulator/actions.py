"""The faults and actions a scenario step can inject, through the SimDevice interface.

Device-side actions run :mod:`edgeward.simulator.ondevice` on the device (its folder in process
mode, the guest in QEMU mode) with :meth:`SimDevice.run`; the broker is stopped and started on
the host; a link is cut with :meth:`SimDevice.set_link`. Replayed evidence is sent the two ways
an attacker could: the device's last evidence message published again verbatim with the device's
(stolen) TLS identity, and its EAT handed to the verifier again (``edgeward attest verify``
against the service's own verifier database). Every action is bounded in time.

I/O: devices, the broker, one MQTT connection and one CLI process for the replay.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError
from edgeward.simulator.backend import BackendView, SimBackend
from edgeward.simulator.device import SimDevice
from edgeward.simulator.process_device import AGENT_CMD
from edgeward.simulator.scenario import Step

ONDEVICE = "python3 -m edgeward.simulator.ondevice"


def _last_line(out: str) -> str:
    """What a tool says is its last line (a guest's Python may print warnings before it)."""
    lines = out.strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class ActionOutcome:
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionContext:
    backend: SimBackend
    view: BackendView
    verifier_toml: Path
    seed: int
    fault_scale: float
    say: Any  # callable(str) for progress lines
    locks: dict[str, Any] = field(default_factory=dict)  # gateway name -> its LockHost


def _replay(ctx: ActionContext, dev: SimDevice) -> ActionOutcome:
    from edgeward.agent.config import load_agent_config
    from edgeward.agent.envelope import encode_fields, topic
    from edgeward.agent.transport import Acked, MqttTransport

    last = ctx.view.last_evidence(dev.name)
    if last is None:
        raise DeviceError(f"{dev.name} has sent no evidence yet to replay")
    seq, eat = last
    before = [a.seq for a in ctx.view.appraisals(dev.name) if a.seq <= seq]
    # 1. the device's evidence message again, verbatim, from a clone holding its TLS identity
    acfg = load_agent_config(dev.workdir() / "agent.toml")
    broker = ctx.backend.broker
    # straight to the broker on the host (a QEMU guest's AGENT.toml names its guestfwd address)
    settings = dataclasses.replace(acfg.mqtt, host="127.0.0.1", port=broker.port,
                                   client_id=f"{dev.name}-replay")
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    t = MqttTransport(settings, events.put)
    t.start()
    acked = False
    try:
        if not t.wait_connected(10):
            raise DeviceError("the replaying clone could not connect to the broker")
        body = {"eat": eat}
        t.publish(topic(dev.name, "attest/evidence"),
                  encode_fields(seq, time.time(), dev.name, "attest.evidence", body))
        deadline = time.monotonic() + 5
        while not acked and time.monotonic() < deadline:
            try:
                acked = isinstance(events.get(timeout=0.2), Acked)
            except queue.Empty:
                pass
    finally:
        t.stop()
    # 2. the EAT itself, handed to the verifier again
    path = dev.workdir() / "replayed-evidence.cbor"
    path.write_bytes(eat)
    p = subprocess.run([*AGENT_CMD, "attest", "verify", str(path), "--verifier-config",
                        str(ctx.verifier_toml), "--json"], capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    try:
        ear = json.loads(p.stdout.decode() or "{}")
    except ValueError:
        ear = {}
    sub: dict[str, Any] = next(iter((ear.get("submods") or {}).values()), {})
    reasons = sub.get("reasons") or []
    status = sub.get("ear.status") or "no result"
    return ActionOutcome(
        output=f"evidence seq {seq} re-published (PUBACK {'yes' if acked else 'no'}); "
               f"verifier on the same EAT: exit {p.returncode}, {status}: "
               + "; ".join(str(r) for r in reasons[:2]),
        data={"replay": {"seq": seq, "appraised_before": before, "cli_exit": p.returncode,
                         "status": status, "reasons": [str(r) for r in reasons]}})


def perform(step: Step, dev: SimDevice | None, ctx: ActionContext) -> ActionOutcome:
    """Do the step's action; a DeviceError if the device or the host could not."""
    a = step.action
    if a in ("none",):
        return ActionOutcome()
    if a == "wait":
        time.sleep(step.params["seconds"] * ctx.fault_scale)
        return ActionOutcome(f"waited {step.params['seconds'] * ctx.fault_scale:.1f} s")
    if a == "broker_down":
        secs = step.params["seconds"] * ctx.fault_scale
        ctx.backend.broker_down()
        ctx.say(f"broker stopped for {secs:.1f} s")
        time.sleep(secs)
        ctx.backend.broker_up()
        return ActionOutcome(f"broker was down {secs:.1f} s, restarted on the same port")
    assert dev is not None
    p = step.params
    if a == "tamper_model":
        return ActionOutcome(_last_line(dev.run(f"{ONDEVICE} tamper-model {p['model']}")))
    if a == "restore_model":
        return ActionOutcome(_last_line(dev.run(f"{ONDEVICE} restore-model {p['model']}")))
    if a == "reboot":
        dev.stop()
        dev.start()
        return ActionOutcome(f"{dev.name} rebooted")
    if a == "extend_pcr":
        return ActionOutcome(_last_line(dev.run(f"{ONDEVICE} extend-pcr {p['pcr']}")))
    if a == "link_down":
        dev.set_link(False)
        return ActionOutcome(f"{dev.name}'s network link cut")
    if a == "link_up":
        dev.set_link(True)
        return ActionOutcome(f"{dev.name}'s network link restored")
    if a == "replay_evidence":
        return _replay(ctx, dev)
    if a in ("tamper_lock", "restore_lock"):
        lock = ctx.locks.get(dev.name)
        if lock is None:
            raise DeviceError(f"{dev.name} has no lock beside it",
                              hint="list its index in the scenario's [scenario] locks")
        return ActionOutcome(lock.tamper() if a == "tamper_lock" else lock.restore())
    if a == "guard_burst":
        out = dev.run(f"{ONDEVICE} guard-burst --seed {ctx.seed} --clean {p['clean']} "
                      f"--ood {p['ood']} --adversarial {p['adversarial']}", timeout=120)
        try:
            data = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise DeviceError(f"{dev.name}: guard-burst printed no result: {out[-200:]}") from e
        flagged = sum(s["flagged"] for s in data["samples"])
        return ActionOutcome(f"{len(data['samples'])} inputs, {flagged} flagged, "
                             f"{data['sent']} events sent to the agent", {"guard": data})
    raise DeviceError(f"unknown action {a}")
