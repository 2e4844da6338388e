"""What the agent does with each input: messages from the broker and events from applications.

A mixin of :class:`edgeward.agent.loop.Agent`, split out of the loop module: the loop decides
*when* (turns, commits, sending), this module decides *what* (route by topic, check commands
and end-to-end acks, answer challenges, accept local events, record PUBACKs). Every refusal
is counted in ``counters`` and logged; nothing here raises to the loop for bad input. No I/O of
its own: replies go through ``emit``/``event`` into the outbox, and an accepted end-to-end ack
deletes from it (:meth:`Inputs.apply_e2e_ack`, called by the loop's commit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgeward.core.errors import EdgewardError, MalformedInputError

from . import seams
from .commands import CommandGate, refusal_reason, save_last_seq
from .config import AgentConfig
from .e2eack import check_ack
from .envelope import PRIORITY_EVIDENCE, parse_topic, valid_type
from .events import Acked, Incoming
from .localsock import LocalEvent
from .outbox import Outbox
from .outbox_rules import ack_verdict
from .ratelimit import TokenBucket
from .transport import MqttTransport

logger = logging.getLogger(__name__)


class Inputs:
    cfg: AgentConfig
    clock: Callable[[], float]
    counters: dict[str, int]
    gate: CommandGate
    transport: MqttTransport
    attester: seams.Attester | None
    ha: Any
    watch: Any
    _due: dict[str, float]
    _seq_path: Any
    _refusals: TokenBucket
    _challenges: TokenBucket
    _local_bucket: TokenBucket
    outbox: Outbox
    inflight: dict[int, int]
    _acks: list[int]
    _refused: list[int]
    _e2e_seen: int
    _e2e_upto: int
    _ack_waiting: bool
    e2e: bool

    def count(self, name: str, n: int = 1) -> None:
        raise NotImplementedError

    def emit(self, kind: str, type_: str, body: dict[str, Any], priority: int) -> None:
        raise NotImplementedError

    def event(self, type_: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def check_models(self, now: float, *, all_models: bool = False) -> None:
        raise NotImplementedError

    def on_message(self, msg: Incoming) -> None:
        try:
            device, kind = parse_topic(msg.topic)
        except MalformedInputError as e:
            self.count("wrong_topic")
            logger.warning("ignoring message: %s", e)
            return
        kinds = ("cmd", "attest/challenge", "attest/result", "ack") if self.e2e else (
            "cmd", "attest/challenge", "attest/result")
        if device != self.cfg.device or kind not in kinds:
            self.count("wrong_topic")
            logger.warning("ignoring message on %s", msg.topic)
            return
        if len(msg.payload) > self.cfg.limits.max_cbor_bytes:
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
        save_last_seq(self._seq_path, cmd.seq)
        logger.info("command %d accepted: %s %s", cmd.seq, cmd.op, cmd.args)
        self.event("command.accepted", {"seq": cmd.seq, "op": cmd.op})
        if cmd.op == "attest":
            self.event("attest.request", {"reason": "command"})
        elif cmd.op == "reverify":
            self.check_models(now, all_models=True)
        elif cmd.op == "set_interval":
            self.cfg = self.cfg.with_interval(float(cmd.args["seconds"]))
            self._due["metrics"] = now

    def on_e2e_ack(self, data: bytes) -> None:
        """A backend ack: checked here (signature, device), applied by the loop's commit."""
        try:
            ack = check_ack(data, self.cfg.device, self.gate.trust, limits=self.cfg.limits)
        except EdgewardError as e:
            self.count("ack_refused")
            logger.warning("ack refused: %s", e)
            return
        self._e2e_seen = max(self._e2e_seen, ack.upto)

    def on_ack(self, ev: Acked) -> None:
        seq = self.inflight.pop(ev.mid, None)
        if seq is None:
            return
        if not ev.ok:
            self.count("broker_rejected")
            logger.error("broker refused message seq %d (%s); dropping it", seq, ev.reason)
            self._refused.append(seq)
            return
        self._acks.append(seq)
        self.count("delivered")

    def apply_e2e_ack(self) -> None:
        """Delete what the backend acknowledged, never beyond what the broker acknowledged.

        An ack beyond :meth:`Outbox.delivered_upto` waits (counted once) until the broker has
        acknowledged that far: the backend may store a message before its PUBACK reaches us.
        """
        verdict = ack_verdict(self._e2e_seen, self._e2e_upto, self.outbox.delivered_upto())
        if verdict == "apply":
            n = self.outbox.ack_upto(self._e2e_seen)
            self._e2e_upto = self._e2e_seen
            self.count("e2e_acked", n)
        elif verdict == "beyond" and not self._ack_waiting:
            self.count("ack_beyond_sent")
            logger.info("backend acks up to seq %d, beyond what the broker acknowledged (%d); "
                        "waiting", self._e2e_seen, self.outbox.delivered_upto())
        self._ack_waiting = verdict == "beyond"

    def _refusal_counts(self) -> dict[str, int]:
        return {k[8:]: v for k, v in self.counters.items() if k.startswith("command_")}

    def on_challenge(self, data: bytes) -> None:
        now = self.clock()
        if not self._challenges.take(now):
            self.count("challenge_rate_limited")
            return
        try:
            nonce = seams.parse_challenge(data, self.cfg.limits)
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
        status = seams.parse_result(data, self.cfg.limits, self.gate.trust)
        if status is None:
            self.count("malformed")
            return
        logger.info("attestation result: %s", status)
        if self.ha is not None:
            self.ha.update(self.transport, attestation=status)

    def on_local(self, ev: LocalEvent) -> None:
        if not self._local_bucket.take(self.clock()):
            self.count("local_rate_limited")
            return
        typ = ev.type if ev.type.startswith("app.") or "." in ev.type else f"app.{ev.type}"
        if not valid_type(typ):
            self.count("local_malformed")
            logger.warning("local event refused: type %r is not valid", typ[:80])
            return
        body = {"src_ts": ev.ts, "pid": ev.pid, "uid": ev.uid, "data": ev.body}
        self.event(typ, body)
        if self.ha is not None and ("anomaly" in typ or "alarm" in typ):
            self.ha.update(self.transport, anomaly=True)
