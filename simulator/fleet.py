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

from edgeward.core.errors import DeviceError
from edgeward.simulator import workdir
from edgeward.simulator.backend import BackendView, SimBackend
from edgeward.simulator.board import SimBoard
from edgeward.simulator.device import SimDevice
from edgeward.simulator.provision import DeviceSpec, FleetKit
from edgeward.simulator.relay import LinkRelay

CHALLENGE_INTERVAL = 5.0  # seconds between scheduled attestations of each device


def make_device(mode: str, spec: DeviceSpec, board: SimBoard, relay: LinkRelay) -> SimDevice:
    """The device for ``mode``: a local process, or a QEMU guest (``edgeward.simulator.qemu``)."""
    if mode == "process":
        from edgeward.simulator.process_device import ProcessDevice

        return ProcessDevice(spec, board, relay)
    try:
        from edgeward.simulator.qemu_device import QemuDevice
    except ImportError as e:
        raise DeviceError("QEMU mode is not available in this build",
                          hint="run with --mode process") from e
    dev: SimDevice = QemuDevice(spec=spec, board=board, relay=relay)
    return dev


class SimFleet:
    def __init__(self, root: Path, board: SimBoard, count: int, mode: str,
                 say: Callable[[str], None]) -> None:
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
            dev = make_device(self.mode, spec, self.board, relay)
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
        self.backend.start_broker()
        self.say(f"mosquitto on 127.0.0.1:{broker.port} (shipped deploy/mosquitto.conf and acl)")
        self.backend.start_service(self.verifier_toml)
        self.say("verifier service running (edgeward verifier run), fleet store "
                 "backend/fleet.sqlite")
        self.view = BackendView(self.root / "backend" / "fleet.sqlite", kit.ear_pub)
        for dev in self.devices:
            dev.start()
        self.say(f"{self.count} device(s) started in {self.mode} mode "
                 f"({time.monotonic() - t0:.1f} s of setup)")

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
        for r in self.relays:
            r.stop()
        if self.view is not None:
            self.view.close()
        if self.root.is_dir():
            workdir.record(self.root)
