"""``--mode process``: a simulated device as a local ``edgeward agent run`` with its own swtpm.

Boot is: start the device's swtpm (TPM state kept in its folder across restarts; PCRs reset as
at power-on), measure the simulated firmware into PCR 7 as a bootloader would, then spawn the
agent exactly as on a device (``edgeward agent run --config AGENT.toml``), its output going to
the device's console log. The device reaches the broker only through its :class:`LinkRelay`,
which :meth:`ProcessDevice.set_link` cuts and restores. :meth:`ProcessDevice.run` runs a shell
command in the device's folder, with the device's Python first on ``PATH`` (the tools of
:mod:`edgeward.simulator.ondevice` are run that way, in both modes).

I/O: the swtpm and agent processes, the device's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgeward.core.errors import DeviceError
from edgeward.simulator.board import SimBoard
from edgeward.simulator.provision import BOOT_MEASUREMENT, BOOT_PCR, DeviceSpec
from edgeward.simulator.relay import LinkRelay

AGENT_CMD = [sys.executable, "-c", "from edgeward.agent.cli import main; main()"]


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ProcessDevice:
    """One device: swtpm + agent process on this host, linked to the broker by a relay."""

    def __init__(self, spec: DeviceSpec, sim_board: SimBoard, relay: LinkRelay) -> None:
        self.spec = spec
        self.name = spec.name
        self.board = sim_board.name
        self.relay = relay
        self.console = spec.folder / "console.log"
        self._swtpm: subprocess.Popen[bytes] | None = None
        self._agent: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.spec.tpm_port}"

    # --- firmware: the TPM and the boot measurement -----------------------------------------

    def power_on_tpm(self) -> None:
        """Start swtpm (fresh PCRs, kept keys) and measure the firmware into PCR 7."""
        if self._swtpm is not None and self._swtpm.poll() is None:
            return
        binary = shutil.which("swtpm")
        if binary is None:
            raise DeviceError("swtpm is not installed", hint="apt-get install swtpm (make setup)")
        state = self.spec.folder / "tpm"
        state.mkdir(exist_ok=True)
        port = self.spec.tpm_port
        log = open(self.console, "ab")
        self._swtpm = subprocess.Popen(
            [binary, "socket", "--tpm2",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self._swtpm.poll() is not None:
                self._swtpm = None
                raise DeviceError(f"{self.name}: swtpm exited at start (port {port} taken?)")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise DeviceError(f"{self.name}: swtpm did not listen on {port}") from None
                time.sleep(0.05)
        from edgeward.firmware_shim.linux.tpm import TpmSigner

        with TpmSigner(self.tcti) as tpm:
            tpm.extend_pcr(BOOT_PCR, hashlib.sha256(BOOT_MEASUREMENT).digest())
        self._log(f"[sim] swtpm on 127.0.0.1:{port}; firmware measured into PCR {BOOT_PCR}")

    def tpm_identity(self, pcrs: list[int]) -> tuple[object, dict[int, bytes]]:
        """The TPM attestation key's public key and the PCR values (provisioning)."""
        from edgeward.firmware_shim.linux.tpm import TpmSigner

        self.power_on_tpm()
        with TpmSigner(self.tcti) as tpm:
            return tpm.public, tpm.read_pcrs(pcrs)

    def _log(self, line: str) -> None:
        with open(self.console, "a") as f:
            f.write(line + "\n")

    # --- SimDevice --------------------------------------------------------------------------

    def start(self) -> None:
        self.power_on_tpm()
        if self._agent is not None and self._agent.poll() is None:
            return
        log = open(self.console, "ab")
        self._agent = subprocess.Popen(
            [*AGENT_CMD, "-v", "agent", "run", "--config", str(self.spec.config)],
            cwd=self.spec.folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        self._log(f"[sim] agent started, pid {self._agent.pid}")

    def stop(self) -> None:
        for attr, grace in (("_agent", 15.0), ("_swtpm", 5.0)):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            setattr(self, attr, None)

    def alive(self) -> bool:
        return self._agent is not None and self._agent.poll() is None

    def exit_code(self) -> int | None:
        return None if self._agent is None else self._agent.poll()

    def console_tail(self, lines: int = 40) -> str:
        return _tail(self.console, lines)

    def run(self, command: str, timeout: float = 30.0) -> str:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["EDGEWARD_CONFIG"] = str(self.spec.config)
        env["TPM2TOOLS_TCTI"] = self.tcti
        try:
            # a shell command is what this method is for (SimDevice.run), run in the
            # device's own folder as the device's console would
            p = subprocess.run(  # noqa: S602
                command, shell=True, cwd=self.spec.folder, env=env, capture_output=True,
                timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise DeviceError(f"{self.name}: '{command[:60]}' did not finish in "
                              f"{timeout:.0f} s") from e
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            err = p.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise DeviceError(f"{self.name}: '{command[:60]}' exited {p.returncode}: "
                              + " | ".join(err))
        return out

    def set_link(self, up: bool) -> None:
        self.relay.set_link(up)
        self._log(f"[sim] network link {'restored' if up else 'cut'}")

    def workdir(self) -> Path:
        return self.spec.folder
