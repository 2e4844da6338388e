"""A simulated fleet: provisioning, backend, N devices, their live state, and teardown.

The composition root of a simulator run: :class:`SimFleet` builds the parts (the provisioning kit,
the broker and verifier service, one link relay and one device per index) and hands them to
each other; :meth:`SimFleet.close` stops everything it started, in reverse. Device state for the
live view is read from the fleet store: ``booting`` (started, not seen by the backend),
``enrolled`` (its TLS identity accepted, birth message stored), ``attested`` (an attestation
result), ``reporting`` (metrics arriving after that), or ``offline`` / ``failed``.

I/O: through the parts it builds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError
from edgeward.simulator import workdir
from edgeward.simulator.backend import BackendView, SimBackend
from edgeward.simulator.board import SimBoard
from edgeward.simulator.device import SimDevice
from edgeward.simulator.provision import DeviceSpec, FleetKit
from edgeward.simulator.relay import LinkRelay

CHALLENGE_INTERVAL = 5.0  # seconds between scheduled attestations of each device


def make_device(mode: str, spec: DeviceSpec, board: SimBoard, relay: LinkRelay,
                lock_line: Path | None = None) -> SimDevice:
    """The device for ``mode``: a local process, or a QEMU guest (``edgeward.simulator.qemu``);
    ``lock_line`` is the unix socket of a lock beside a QEMU device (its second console)."""
    if mode == "process":
        from edgeward.simulator.process_device import ProcessDevice

        return ProcessDevice(spec, board, relay)
    try:
        from edgeward.simulator.qemu_device import QemuDevice
    except ImportError as e:
        raise DeviceError("QEMU mode is not available in this build",
                          hint="run with --mode process") from e
    dev: SimDevice = QemuDevice(spec=spec, board=board, relay=relay, lock_line=lock_line)
    return dev


class SimFleet:
    def __init__(self, root: Path, board: SimBoard, count: int, mode: str,
                 say: Callable[[str], None], locks: list[int] | tuple[int, ...] = ()) -> None:
        self.root = root.resolve()
        self.board = board
        self.count = count
        self.mode = mode
        self.say = say
        self.devices: list[SimDevice] = []
        self.relays: list[LinkRelay] = []
        self.backend: SimBackend | None = None
        self.view: BackendView | None = None
        self.verifier_toml: Path | None = None
        self.names = [f"{board.name}-sim-{i + 1:02d}" for i in range(count)]
        self.lock_indexes = tuple(i for i in locks if i < count)
        self.locks: dict[str, Any] = {}  # gateway name -> LockHost (edgeward.simulator.lock)

    def setup(self) -> None:
        workdir.claim(self.root, option="--workdir")  # never empties a folder it did not make
        t0 = time.monotonic()
        kit = FleetKit(self.root)
        self.say("training, signing and calibrating the reference model (digits_mlp)")
        kit.build_model()
        self.backend = SimBackend(self.root, kit.ca, broker_hosts=self._guest_broker_hosts())
        broker = self.backend.broker
        specs, pcr_sets = [], []
        from edgeward.firmware_shim.sim.swtpm import free_port_pair

        for i, name in enumerate(self.names):
            relay = LinkRelay(("127.0.0.1", broker.port)).start()
            self.relays.append(relay)
            spec = kit.device_files(i, name, self.board.attest_board, relay.port,
                                    free_port_pair(), self.board.pcrs)
            line = self._add_lock(i, name, spec.config)
            dev = make_device(self.mode, spec, self.board, relay, line)
            self.devices.append(dev)
            public, pcrs = dev.tpm_identity(list(self.board.pcrs))  # type: ignore[attr-defined]
            kit.endorse(spec, public)
            specs.append(spec)
            pcr_sets.append(pcrs)
            self.say(f"{name}: TPM attestation key made and endorsed by the maker CA; "
                     f"link relay 127.0.0.1:{relay.port}")
        if any(p != pcr_sets[0] for p in pcr_sets):
            raise DeviceError("the simulated devices booted with different PCRs")
        self.verifier_toml = kit.verifier_files(broker.port, self.board.attest_board, specs,
                                                pcr_sets[0], CHALLENGE_INTERVAL)
        if self.locks:
            self._register_locks(self.verifier_toml)
        self.backend.start_broker()
        self.say(f"mosquitto on 127.0.0.1:{broker.port} (shipped deploy/mosquitto.conf and acl)")
        self.backend.start_service(self.verifier_toml)
        self.say("verifier service running (edgeward verifier run), fleet store "
                 "backend/fleet.sqlite")
        self.view = BackendView(self.root / "backend" / "fleet.sqlite", kit.ear_pub)
        for name, lock in self.locks.items():
            lock.start()
            self.say(f"{name}: its lock (MicroPython, the lock's own code) is on, serial line "
                     f"{lock.port}")
        for dev in self.devices:
            dev.start()
        self.say(f"{self.count} device(s) started in {self.mode} mode "
                 f"({time.monotonic() - t0:.1f} s of setup)")

    def _add_lock(self, i: int, name: str, config: Path) -> Path | None:
        """A lock beside device ``i`` if the scenarios ask for one: the lock's folder, its
        serial line, and the gateway's ``[hardware]`` settings for it."""
        if i not in self.lock_indexes:
            return None
        from edgeward.simulator.lock import LOCK_NAME, LockHost

        lock = LockHost(self.root / "locks" / name, name, qemu=self.mode == "qemu")
        self.locks[name] = lock
        with open(config, "a") as f:
            f.write(f'\n[hardware]\nlock_port = "{lock.port}"\nlock_name = "{LOCK_NAME}"\n'
                    "lock_timeout = 1.0\nlock_retries = 3\n")
        self.say(f"{name}: a lock microcontroller beside it, key {lock.kid.decode()} "
                 "registered with the verifier")
        return getattr(lock, "socket_path", None)

    def _register_locks(self, verifier_toml: Path) -> None:
        """The vendor's lock registrations (locks.toml) named in VERIFIER.toml."""
        text = "".join(lock.registration_toml(str(lock.key_file)) + "\n"
                       for lock in self.locks.values())
        (verifier_toml.parent / "locks.toml").write_text(text)
        with open(verifier_toml, "a") as f:
            f.write('\n[locks]\nfile = "locks.toml"\n')

    def _guest_broker_hosts(self) -> tuple[str, ...]:
        """The address a QEMU guest dials for the broker (its ``guestfwd``), in QEMU mode."""
        if self.mode != "qemu":
            return ()
        from edgeward.simulator.image import recipe

        return (str(recipe.BROKER_ADDR),)

    def state(self, i: int) -> str:
        dev, name = self.devices[i], self.names[i]
        if not dev.alive():
            return "failed"
        assert self.view is not None
        status = self.view.status(name)
        if status is None:
            return "booting"
        if status != "online":
            return status
        results = self.view.appraisals(name)
        if not results:
            return "enrolled"
        metrics = self.view.messages(name, "metrics", after=results[0].seq)
        return "reporting" if metrics else "attested"

    def close(self) -> None:
        for dev in self.devices:
            with contextlib.suppress(Exception):
                dev.stop()
        if self.backend is not None:
            self.backend.stop()
        for lock in self.locks.values():
            with contextlib.suppress(Exception):
                lock.stop()
        for r in self.relays:
            r.stop()
        if self.view is not None:
            self.view.close()
        if self.root.is_dir():
            workdir.record(self.root)
