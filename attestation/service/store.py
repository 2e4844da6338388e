"""The store interface of the verifier service, and the one place that picks an implementation.

Two stores, each a :class:`~typing.Protocol` with two implementations: SQLite (one host and the
demo; the default) and PostgreSQL (``[store] url`` in VERIFIER.toml, many workers on many hosts):

* :class:`VerifierStore`: :class:`.verifier_store.Store`, :class:`.verifier_store_pg.PgStore`;
* :class:`FleetStoreAPI`: :class:`.fleet_store.FleetStore`, :class:`.fleet_store_pg.PgFleetStore`.

Both implementations pass the same tests (tests/attestation/service/test_store_contract.py) and
hold the same promises with many workers: a message stored once per ``(device, seq)``, an
evidence appraised once, a nonce consumed once, a due challenge claimed by one worker, a
device's contiguous seq that only moves up. Errors of the database are :class:`DeviceError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from edgeward.agent.envelope import Envelope
from edgeward.attestation.config import PostgresSettings
from edgeward.attestation.nonces import Session

from .gaps import GapReport, Range
from .verifier_store import DeviceRecord


class VerifierStore(Protocol):
    """Devices, challenge sessions, bootcounts and results of the verifier."""

    path: str

    def put_device(self, rec: DeviceRecord, *, replace: bool = False) -> bool: ...
    def device_by_key(self, key_id: bytes) -> DeviceRecord | None: ...
    def device(self, name: str) -> DeviceRecord | None: ...
    def put_session(self, s: Session) -> None: ...
    def session(self, nonce: bytes) -> Session | None: ...
    def record_appraisal(self, *, device: str | None, nonce: bytes | None, now: float,
                         status: int, evidence_sha256: bytes, ear: bytes,
                         bootcount: int | None, board: str | None = None,
                         ueid: bytes | None = None,
                         lock_bootcounts: Mapping[str, int] | None = None) -> None: ...
    def lock_bootcount(self, gateway: str, name: str) -> int | None: ...
    def history(self, device: str, limit: int = 20) -> list[tuple[float, int, bytes]]: ...
    def close(self) -> None: ...


class FleetStoreAPI(Protocol):
    """Messages, drops, per-device state and appraisals of the fleet."""

    worker: str

    def record(self, env: Envelope, now: float) -> bool: ...
    def record_drops(self, device: str, ranges: list[Range], reported_seq: int) -> None: ...
    def seen(self, device: str, now: float, status: str | None = None) -> None: ...
    def gaps(self, device: str) -> GapReport: ...
    def contiguous(self, device: str, *, window: int = 100_000) -> int: ...
    def highest(self, device: str) -> int: ...
    def messages(self, device: str, type_: str | None = None) -> list[tuple[int, str, Any]]: ...
    def devices(self) -> list[str]: ...
    def status(self, device: str) -> str | None: ...
    def schedule_challenge(self, device: str, when: float) -> None: ...
    def claim_due_challenges(self, now: float, interval: float,
                             limit: int | None = None) -> list[str]: ...
    def next_command_seq(self, device: str) -> int: ...
    def claim_appraisal(self, device: str, evidence_seq: int, now: float) -> bool: ...
    def finish_appraisal(self, device: str, evidence_seq: int, status: str,
                         ear: bytes | None) -> None: ...
    def appraisals(self, device: str | None = None) -> list[tuple[str, int, str, str]]: ...
    def device_rows(self) -> list[tuple[str, str | None, float | None, int]]: ...
    def latest_appraisals(self) -> dict[str, tuple[str, float]]: ...
    def appraisal_history(self, device: str,
                          limit: int) -> list[tuple[int, str, float, bytes | None]]: ...
    def recent(self, device: str, types: tuple[str, ...], *, exclude: bool,
               limit: int) -> list[tuple[int, int, str, float, float, Any]]: ...
    def events_after(self, after: int, *, since: float | None, types: tuple[str, ...],
                     skip: tuple[str, ...], device: str | None, limit: int,
                     newest: bool = False
                     ) -> list[tuple[int, str, int, str, float, float, Any]]: ...
    def last_rowid(self) -> int: ...
    def close(self) -> None: ...


def open_verifier_store(database: Path | str, postgres: PostgresSettings | None) -> VerifierStore:
    """The verifier store: PostgreSQL if ``[store] url`` is set, else the SQLite ``database``."""
    if postgres is not None:
        from .verifier_store_pg import PgStore

        return PgStore(postgres)
    from .verifier_store import Store

    return Store(database)


def open_fleet_store(path: Path, postgres: PostgresSettings | None, *,
                     worker: str = "w0") -> FleetStoreAPI:
    """The fleet store: PostgreSQL if ``[store] url`` is set, else the SQLite file ``path``."""
    if postgres is not None:
        from .fleet_store_pg import PgFleetStore

        return PgFleetStore(postgres, worker=worker)
    from .fleet_store import FleetStore

    return FleetStore(path, worker=worker)
