"""``--mode qemu``: the fleet runner's device as a QEMU guest (:class:`QemuDevice`, a SimDevice).

The runner provisions a device folder for process mode (``DeviceSpec``: AGENT.toml, models,
TLS identity, backend keys) and a :class:`LinkRelay` to the broker. This adapter turns that
folder into the guest's config drive and boots a :class:`~edgeward.simulator.qemu.QemuGuest`:

* AGENT.toml is rewritten once for the guest and kept in the folder, so the reference values
  the runner measures from it are the guest's: the broker at ``10.0.2.100:8883`` (a
  ``guestfwd`` to the device's relay), the TPM at ``/dev/tpmrm0``, the TLS files copied into
  ``device/`` and named relatively;
* :meth:`QemuDevice.tpm_identity` makes the attestation key in the device's swtpm state before
  the guest first boots (the guest's QEMU then attaches the same state as its
  ``tpm-tis-device``), and returns the PCRs a booted guest has: zero, plus the simulated
  firmware's measurement that the guest's ``start`` hook extends into the TPM before the agent
  starts, as a bootloader would;
* :meth:`QemuDevice.run` runs a command in ``/etc/edgeward`` inside the guest, with
  ``EDGEWARD_CONFIG`` set, as process mode does in the device's folder.

I/O: the device folder (AGENT.toml, the ``start`` hook), swtpm while provisioning, the guest.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tomllib
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError

from .image import build_image, recipe
from .qemu import BROKER_PORT, Forward, QemuGuest, QemuMachine

GUEST_TCTI = "device:/dev/tpmrm0"
LOCK_PORT = "/dev/hvc1"  # the guest's second virtio console: the lock's serial line
# what stays in the host's device folder and off the config drive
HOST_ONLY = ("tpm", "qemu", "state", "run", "console.log")


def pcr_extend_command(pcr: int, digest: bytes) -> bytes:
    """A TPM2_PCR_Extend command (TPM 2.0 Part 3 §22.2) of the SHA-256 bank, password session."""
    auth = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, no nonce, no attrs, no hmac
    body = (struct.pack(">II", pcr, len(auth)) + auth
            + struct.pack(">IH", 1, 0x000B) + digest)  # one TPMT_HA, TPM_ALG_SHA256
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x00000182) + body


def _start_hook(pcr: int, digest: bytes) -> str:
    cmd = pcr_extend_command(pcr, digest).hex()
    return ("#!/bin/sh\n# the simulated firmware's measurement, as a bootloader would extend it\n"
            "python3 -c \"import os; fd = os.open('/dev/tpmrm0', os.O_RDWR); "
            f"os.write(fd, bytes.fromhex('{cmd}')); r = os.read(fd, 64); "
            "print('edgeward-sim: PCR extend rc', r[6:10].hex())\"\n")


class QemuDevice:
    """The runner's SimDevice in QEMU mode: ``QemuDevice(spec=..., board=..., relay=...)``."""

    def __init__(self, *, spec: Any, board: Any, relay: Any, image: Any = None,
                 lock_line: Path | None = None) -> None:
        self.spec = spec
        self.name: str = spec.name
        self.board: str = board.name
        self.sim_board = board
        self.relay = relay
        self._image = image
        self.lock_line = lock_line  # a lock's serial line: the guest's /dev/hvc1
        self.folder = Path(spec.folder)
        self.machine = QemuMachine(str(board.cpu), int(board.cores), int(board.memory_mb))
        self._guest: QemuGuest | None = None
        self._guest_config()

    def _guest_config(self) -> None:
        """Rewrite AGENT.toml for the guest (once; the runner measures it afterwards)."""
        path = Path(self.spec.config)
        text = path.read_text()
        data = tomllib.loads(text)
        mqtt = data.get("mqtt", {})
        out = []
        section = ""
        for name, dest in (("ca", "device/fleet-ca.pem"), ("cert", "device/tls.crt"),
                           ("key", "device/tls.key")):
            src = mqtt.get(name)
            if src and Path(src).is_absolute():
                shutil.copy(src, self.folder / dest)
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
            if section == "[device]" and key == "tpm_tcti":
                line = f'tpm_tcti = "{GUEST_TCTI}"'
            elif section == "[mqtt]" and key == "host":
                line = f'host = "{recipe.BROKER_ADDR}"'
            elif section == "[mqtt]" and key == "port":
                line = f"port = {BROKER_PORT}"
            elif section == "[hardware]" and key == "lock_port":
                line = f'lock_port = "{LOCK_PORT}"'
            elif section == "[mqtt]" and key in ("ca", "cert", "key"):
                rel = {"ca": "device/fleet-ca.pem", "cert": "device/tls.crt",
                       "key": "device/tls.key"}[key]
                line = f'{key} = "{rel}"'
            out.append(line)
        path.write_text("\n".join(out) + "\n")

    # -- provisioning ----------------------------------------------------------------------

    def tpm_identity(self, pcrs: list[int]) -> tuple[object, dict[int, bytes]]:
        """Make the AK in the device's swtpm state; its public key and a booted guest's PCRs."""
        from edgeward.firmware_shim.linux.tpm import TpmSigner
        from edgeward.firmware_shim.sim.swtpm import start_swtpm

        boot_pcr: int | None = None
        boot_measurement = b""
        try:  # the runner's simulated firmware measurement, when the runner defines one
            from edgeward.simulator.provision import BOOT_MEASUREMENT, BOOT_PCR

            boot_pcr, boot_measurement = BOOT_PCR, BOOT_MEASUREMENT
        except ImportError:
            pass
        try:
            with start_swtpm(self.folder / "tpm") as tpm, TpmSigner(tpm.tcti) as signer:
                if boot_pcr is not None:
                    digest = hashlib.sha256(boot_measurement).digest()
                    signer.extend_pcr(boot_pcr, digest)
                    hook = self.folder / "start"
                    hook.write_text(_start_hook(boot_pcr, digest))
                    hook.chmod(0o755)
                return signer.public, signer.read_pcrs(pcrs)
        except RuntimeError as e:
            raise DeviceError(f"{self.name}: swtpm did not start to provision: {e}") from e

    # -- SimDevice -------------------------------------------------------------------------

    def _the_guest(self) -> QemuGuest:
        if self._guest is None:
            image = self._image or build_image(self.board)
            self._guest = QemuGuest(
                self.name, self.board, image, self.folder, self.folder / "qemu",
                [Forward(int(self.relay.port))], machine=self.machine,
                tpm_state=self.folder / "tpm", exclude=HOST_ONLY,
                serial_lines=[self.lock_line] if self.lock_line else [])
        return self._guest

    def start(self) -> None:
        self._the_guest().start()

    def stop(self) -> None:
        if self._guest is not None:
            self._guest.stop()

    def alive(self) -> bool:
        return self._guest is not None and self._guest.alive()

    def exit_code(self) -> int | None:
        return None

    def console_tail(self, lines: int = 40) -> str:
        return self._guest.console_tail(lines) if self._guest is not None else ""

    def run(self, command: str, timeout: float = 30.0) -> str:
        return self._the_guest().run(
            f"cd {recipe.GUEST_CONFIG} && export EDGEWARD_CONFIG={recipe.GUEST_CONFIG}/agent.toml"
            f" TPM2TOOLS_TCTI={GUEST_TCTI} && {command}", timeout)

    def set_link(self, up: bool) -> None:
        """The guest's NIC link down or up (QMP set_link), and the relay with it."""
        self._the_guest().set_link(up)
        setter = getattr(self.relay, "set_link", None)
        if setter is not None:
            setter(up)

    def workdir(self) -> Path:
        return self.folder
