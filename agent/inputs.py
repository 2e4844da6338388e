"""What the agent does with each input: messages from the broker and events from applications.

:class:`Inputs` is one of the agent's parts, handed its collaborators by the composition root
(:mod:`.seams`): it routes by topic, checks commands and end-to-end acks, answers challenges and
accepts local events. The loop decides *when*; this decides *what*. Every refusal is counted in
``counters`` and logged; nothing here raises to the loop for bad input. Its only output goes
through callables: ``emit`` (a message for the outbox), ``on_command`` (an accepted command, run
by the loop), ``on_backend_ack`` (a verified ack, for the delivery core) and ``notify`` (state
for Home Assistant). Its only I/O is remembering the last command seq (:mod:`.commands`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeward.core.errors import EdgewardError, MalformedInputError
from edgeward.core.limits import Limits

from .commands import Command, CommandGate, refusal_reason, save_last_seq
from .e2eack import check_ack
from .envelope import PRIORITY_EVIDENCE, PRIORITY_SECURITY, parse_topic, valid_type
from .events import Incoming
from .localsock import LocalEvent
from .ratelimit import TokenBucket
from .seams import Attester, parse_challenge, parse_result

logger = logging.getLogger(__name__)

Emit = Callable[[str, str, dict[str, Any], int], None]  # kind, type, body, priority


class Inputs:
    def __init__(
        self,
        *,
        device: str,
        limits: Limits,
        gate: CommandGate,
        seq_path: Path,
        clock: Callable[[], float],
        counters: dict[str, int],
        emit: Emit,
        on_command: Callable[[Command, float], None],
        on_backend_ack: Callable[[int], None],
        e2e: bool,
        attester: Attester | None = None,
        notify: Callable[..., None] | None = None,
        ear_trust: Any = None,
    ) -> None:
        self.device = device
        self.ear_trust = ear_trust  # the verifier's EAR keys; never the command trust store
        self.limits = limits
        self.gate = gate
        self.seq_path = seq_path
        self.clock = clock
        self.counters = counters
        self.emit = emit
        self.on_command_accepted = on_command
        self.on_backend_ack = on_backend_ack
        self.attester = attester
        self.notify = notify
        self.kinds = ("cmd", "attest/challenge", "attest/result", *(("ack",) if e2e else ()))
        self._refusals = TokenBucket(1.0, burst=5.0)
        self._challenges = TokenBucket(0.5, burst=2.0)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def event(self, type_: str, body: dict[str, Any]) -> None:
        self.emit("event", type_, body, PRIORITY_SECURITY)

    def on_message(self, msg: Incoming) -> None:
        try:
            device, kind = parse_topic(msg.topic)
        except MalformedInputError as e:
            self.count("wrong_topic")
            logger.warning("ignoring message: %s", e)
            return
        if device != self.device or kind not in self.kinds:
            self.count("wrong_topic")
            logger.warning("ignoring message on %s", msg.topic)
            return
        if len(msg.payload) > self.limits.max_cbor_bytes:
            self.count("oversized")
            logger.warning("ignoring %d-byte message on %s", len(msg.payload), msg.topic)
            return
        if kind == "cmd":
            self.on_command(msg.payload)
        elif kind == "attest/challenge":
            self.on_challenge(msg.payload)
        elif kind == "ack":
            self.on_e2e_ack(msg.payload)
        else:
            self.on_result(msg.payload)

    def on_command(self, data: bytes) -> None:
        now = self.clock()
        try:
            cmd = self.gate.check(data, now)
        except EdgewardError as e:
            reason = refusal_reason(e)
            self.count(f"command_{reason}")
            logger.warning("command refused (%s): %s", reason, e)
            if self._refusals.take(now):
                self.event("command.refused", {"reason": reason, "detail": str(e)[:200],
                                               "counts": self._refusal_counts()})
            return
        save_last_seq(self.seq_path, cmd.seq)
        logger.info("command %d accepted: %s %s", cmd.seq, cmd.op, cmd.args)
        self.event("command.accepted", {"seq": cmd.seq, "op": cmd.op})
        self.on_command_accepted(cmd, now)

    def on_e2e_ack(self, data: bytes) -> None:
        """A backend ack: checked here (signature, device), applied by the delivery core."""
        try:
            ack = check_ack(data, self.device, self.gate.trust, limits=self.limits)
        except EdgewardError as e:
            self.count("ack_refused")
            logger.warning("ack refused: %s", e)
            return
        self.on_backend_ack(ack.upto)

    def _refusal_counts(self) -> dict[str, int]:
        return {k[8:]: v for k, v in self.counters.items() if k.startswith("command_")}

    def on_challenge(self, data: bytes) -> None:
        now = self.clock()
        if not self._challenges.take(now):
            self.count("challenge_rate_limited")
            return
        try:
            nonce = parse_challenge(data, self.limits)
        except MalformedInputError as e:
            self.count("malformed")
            logger.warning("malformed challenge: %s", e)
            return
        if self.attester is None:
            self.event("attest.unavailable", {"reason": "no attester configured"})
            return
        try:
            eat = self.attester(nonce)
        except EdgewardError as e:
            logger.error("cannot produce evidence: %s", e)
            self.event("attest.failed", {"reason": str(e)[:200]})
            return
        self.emit("attest/evidence", "attest.evidence", {"nonce": nonce, "eat": eat},
                  PRIORITY_EVIDENCE)

    def on_result(self, data: bytes) -> None:
        status = parse_result(data, self.limits, self.ear_trust, now=self.clock(),
                              device=self.device)
        if status is None:
            self.count("malformed")
            return
        logger.info("attestation result: %s", status)
        if self.notify is not None:
            self.notify(attestation=status)

    def on_local(self, ev: LocalEvent) -> None:
        # The socket server admits allow-listed names as app.<name> and rate-limits them (its
        # replies tell the sender); an application never sends an agent event type.
        typ = ev.type
        if not typ.startswith("app.") or not valid_type(typ):
            self.count("local_malformed")
            logger.warning("local event refused: type %r is not valid", typ[:80])
            return
        body = {"src_ts": ev.ts, "pid": ev.pid, "uid": ev.uid, "data": ev.body}
        self.event(typ, body)
        if self.notify is not None and ("anomaly" in typ or "alarm" in typ):
            self.notify(anomaly=True)
