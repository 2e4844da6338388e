"""A simulated device as a QEMU ``-M virt`` ARM64 guest: :class:`QemuGuest` (a ``SimDevice``).

One device is three host processes, all started and stopped here:

* ``swtpm socket --tpm2`` with its control channel on a unix socket, the device's own TPM 2.0,
  attached as QEMU's ``tpm-tis-device`` (the guest sees ``/dev/tpmrm0``, as on a board);
* ``qemu-system-aarch64 -M virt`` with the board's CPU model, core count and memory, booting the
  simulator image (:mod:`edgeward.simulator.image`) with ``-kernel``/``-initrd``;
* per guest connection to a forwarded service, a relay (:mod:`.qemu_relay`).

The guest's network is QEMU's user-mode network with ``restrict=on``: the guest reaches nothing
but the ``guestfwd`` addresses, each relayed to one service on the host's loopback (the broker at
``10.0.2.100:8883``), and nothing reaches the guest. Its identity, keys, certificate and
AGENT.toml come from a folder packed as a tar into ``-fw_cfg name=opt/edgeward/config``; the
guest's /init unpacks it into /etc/edgeward and runs ``edgeward agent run`` as on a device.

The serial console (kernel and agent log) goes to ``console.log`` in the work folder; a second
console (``virtconsole``, /dev/hvc0 in the guest) runs a shell for :meth:`QemuGuest.run`; the
QEMU monitor (QMP, a unix socket) cuts and restores the link (``set_link``) and powers off.

I/O: the work folder, the processes above and their unix sockets.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward.core.errors import DeviceError

from .image import Image, recipe

logger = logging.getLogger(__name__)

BROKER_PORT = 8883  # the guest's AGENT.toml names 10.0.2.100:8883
# What a Pi keeps on its SD card across a reboot and the guest keeps in RAM: the agent's state
# folder (seq counter, outbox, anti-rollback versions). Saved from the guest when it stops
# cleanly and put back on the next boot's config drive; without it a rebooted guest would start
# again at seq 1 and the backend would drop its next messages as duplicates.
KEPT = ("state",)
KEPT_MAX = 8 * 1024 * 1024


@dataclass(frozen=True)
class QemuMachine:
    """What QEMU emulates for a board: CPU model, cores and memory."""

    cpu: str = "cortex-a72"
    smp: int = 4
    memory_mb: int = 1024


# Built-in boards until boards/ describes them (Pi 4: Cortex-A72; Pi 5: Cortex-A76).
MACHINES: dict[str, QemuMachine] = {
    "pi4": QemuMachine("cortex-a72", 4, 1024),
    "pi5": QemuMachine("cortex-a76", 4, 1024),
}


def machine_for(board: str) -> QemuMachine:
    """The machine for a board name (``smartlock-pi4`` -> the Pi 4 one); Pi 4 if none matches."""
    try:  # a board definition that names its emulation wins
        from edgeward import boards

        loader: Any = getattr(boards, "load_board", None)
        if loader is not None:
            b = loader(board)
            q = getattr(b, "qemu", None)
            if q is not None:
                return QemuMachine(q.cpu, int(q.smp), int(q.memory_mib))
    except Exception:  # noqa: S110 - an unknown or unloadable board falls back to the table
        pass
    for key, machine in MACHINES.items():
        if key in board:
            return machine
    return MACHINES["pi4"]


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-aarch64")


@dataclass(frozen=True)
class Forward:
    """A host service on loopback that the guest reaches at ``guest_addr:guest_port``."""

    host_port: int
    guest_port: int = BROKER_PORT
    guest_addr: str = recipe.BROKER_ADDR


def pack_config(folder: Path, exclude: tuple[str, ...] = (), kept: bytes = b"") -> bytes:
    """The config drive: ``folder`` (less the names in ``exclude``) as a root-owned tar, then
    the members of ``kept`` (a tar of the guest's own state from its last run, see
    :data:`KEPT`)."""
    buf = io.BytesIO()

    def owner(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for p in sorted(folder.iterdir()):
            if p.name in exclude:
                continue
            tar.add(p, arcname=p.name, filter=owner)
        if kept:
            with tarfile.open(fileobj=io.BytesIO(kept)) as old:
                for m in old.getmembers():
                    top = m.name.split("/", 1)[0]
                    if top not in KEPT or not (m.isfile() or m.isdir()) or ".." in m.name:
                        continue  # only the kept folders, only plain files and folders
                    tar.addfile(owner(m), old.extractfile(m) if m.isfile() else None)
    return buf.getvalue()


class QemuGuest:
    """One ARM64 guest running the real agent, with its own swtpm (see the module docstring).

    A ``SimDevice``; the fleet runner's adapter is
    :class:`edgeward.simulator.qemu_device.QemuDevice`.
    """

    def __init__(self, name: str, board: str, image: Image, config: Path, work: Path,
                 forwards: list[Forward], *, machine: QemuMachine | None = None,
                 tpm_state: Path | None = None, exclude: tuple[str, ...] = (),
                 serial_lines: list[Path] | None = None) -> None:
        self.name = name
        self.board = board
        self.image = image
        self.config = config
        self._work = work
        self.forwards = forwards
        self.machine = machine or machine_for(board)
        self.tpm_state = tpm_state or work / "tpm"
        self.exclude = exclude  # names in ``config`` that stay off the config drive
        # unix sockets served on the host (a lock's serial line): /dev/hvc1, /dev/hvc2, ...
        self.serial_lines = list(serial_lines or [])
        self.console = work / "console.log"
        self._qemu: subprocess.Popen[bytes] | None = None
        self._swtpm: subprocess.Popen[bytes] | None = None
        self._cmd: socket.socket | None = None
        self._cmd_buf = b""
        self._cmd_seq = 0
        self._lock = threading.Lock()
        self.started_at: float | None = None

    # -- SimDevice -------------------------------------------------------------------------

    def workdir(self) -> Path:
        return self._work

    def start(self) -> None:
        if self._qemu is not None:
            return
        qemu, swtpm = qemu_binary(), shutil.which("swtpm")
        if qemu is None or swtpm is None:
            raise DeviceError("qemu-system-aarch64 or swtpm is not installed",
                              hint="run `make system` (Debian packages qemu-system-arm, swtpm)")
        self._work.mkdir(parents=True, exist_ok=True)
        self.tpm_state.mkdir(parents=True, exist_ok=True)
        for sock in ("swtpm.sock", "qmp.sock", "cmd.sock"):
            with contextlib.suppress(FileNotFoundError):
                (self._work / sock).unlink()
        kept = self._work / "kept.tar"
        (self._work / "config.tar").write_bytes(pack_config(
            self.config, self.exclude, kept.read_bytes() if kept.is_file() else b""))
        self.console.write_bytes(b"")
        self._swtpm = self._spawn("swtpm", [
            swtpm, "socket", "--tpm2", "--tpmstate", f"dir={self.tpm_state}",
            "--ctrl", f"type=unixio,path={self._work / 'swtpm.sock'}",
            "--log", f"file={self._work / 'swtpm.log'},level=1", "--terminate"])
        self._wait_path(self._work / "swtpm.sock", self._swtpm, "swtpm")
        self.started_at = time.monotonic()
        self._qemu = self._spawn("qemu", [qemu, *self.qemu_args()])
        self._wait_path(self._work / "qmp.sock", self._qemu, "qemu")
        logger.info("%s: QEMU %s, %d cores, %d MiB", self.name, self.machine.cpu,
                    self.machine.smp, self.machine.memory_mb)

    def qemu_args(self) -> list[str]:
        w, m = self._work, self.machine
        relay = f"{sys.executable} -m edgeward.simulator.qemu_relay"
        fwd = "".join(f",guestfwd=tcp:{f.guest_addr}:{f.guest_port}-cmd:{relay} {f.host_port}"
                      for f in self.forwards)
        lines: list[str] = []
        for i, path in enumerate(self.serial_lines, 1):  # after cmd0 (hvc0): hvc1, hvc2, ...
            lines += ["-chardev", f"socket,id=line{i},path={path},reconnect=1",
                      "-device", f"virtconsole,chardev=line{i}"]
        return [
            "-M", "virt", "-cpu", m.cpu, "-smp", str(m.smp), "-m", str(m.memory_mb),
            "-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", "console=ttyAMA0 panic=-1 quiet loglevel=4",
            "-chardev", f"file,id=con0,path={self.console}", "-serial", "chardev:con0",
            "-chardev", f"socket,id=cmd0,path={w / 'cmd.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci,romfile=", "-device", "virtconsole,chardev=cmd0",
            *lines,
            "-netdev", f"user,id=net0,restrict=on{fwd}",
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-device", "virtio-rng-pci,romfile=",
            "-chardev", f"socket,id=chrtpm,path={w / 'swtpm.sock'}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis-device,tpmdev=tpm0",
            "-fw_cfg", f"name={recipe.FW_CFG_NAME},file={w / 'config.tar'}",
            "-qmp", f"unix:{w / 'qmp.sock'},server=on,wait=off",
        ]

    def alive(self) -> bool:
        return self._qemu is not None and self._qemu.poll() is None

    def console_tail(self, lines: int = 40) -> str:
        try:
            data = self.console.read_bytes()[-256 * 1024:]
        except OSError:
            return ""
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        return "\n".join(text.splitlines()[-lines:])

    def run(self, command: str, timeout: float = 30.0) -> str:
        """Run ``command`` in the guest's shell; its output, or DeviceError if it exits non-zero."""
        with self._lock:
            if not self.alive():
                raise DeviceError(f"{self.name} is not running")
            self._cmd_seq += 1
            tag = f"ew{os.getpid()}x{self._cmd_seq}"
            # the marker is split in the command so that an echo of the input never matches it
            script = (f"echo {tag[:3]}''{tag[3:]}B\n{command}\n"
                      f"echo {tag[:3]}''{tag[3:]}E $?\n")
            self._cmd_send(script.encode(), timeout)
            pattern = re.compile(rf"{tag}B\n(.*?){tag}E (\d+)\n".encode(), re.S)
            deadline = time.monotonic() + timeout
            while (m := pattern.search(self._cmd_buf)) is None:
                if time.monotonic() > deadline:
                    raise DeviceError(f"{self.name}: no answer to `{command}` in {timeout:.0f} s")
                self._cmd_recv(deadline)
            self._cmd_buf = self._cmd_buf[m.end():]
            out, status = m.group(1).decode("utf-8", "replace"), int(m.group(2))
        if status != 0:
            raise DeviceError(f"{self.name}: `{command}` exited with {status}: {out.strip()}")
        return out

    def set_link(self, up: bool) -> None:
        self.qmp("set_link", name="net0", up=up)

    def stop(self) -> None:
        """Stop the agent (SIGTERM, so it says goodbye), power off, then end swtpm; idempotent."""
        if self.alive():
            with contextlib.suppress(DeviceError, OSError):
                # busybox has no pgrep/pkill; [e] keeps the pattern from matching this shell
                self.run("agent() { ps | awk '/[e]dgeward.agent.cli/ {print $1}'; }; "
                         "kill -TERM $(agent); for i in $(seq 50); do "
                         "[ -z \"$(agent)\" ] && break; sleep 0.2; done", 15)
            self._keep_state()
            with contextlib.suppress(DeviceError, OSError):
                self.qmp("quit")
        self._end(self._qemu, "qemu")
        self._qemu = None
        self._end(self._swtpm, "swtpm")
        self._swtpm = None
        if self._cmd is not None:
            self._cmd.close()
            self._cmd = None

    def _keep_state(self) -> None:
        """Save the guest's :data:`KEPT` folders (after the agent stopped) for the next boot."""
        try:
            kept = " ".join(KEPT)
            out = self.run(f"cd {recipe.GUEST_CONFIG} && for d in {kept}; do [ -d $d ] && "
                           "echo $d; done > /tmp/kept && if [ -s /tmp/kept ]; then "
                           "tar -cf - $(cat /tmp/kept) | base64; fi", 60)
            data = base64.b64decode("".join(out.split()), validate=True)
        except (DeviceError, OSError, ValueError) as e:
            logger.warning("%s: its state was not saved for the next boot: %s", self.name, e)
            return
        if 0 < len(data) <= KEPT_MAX:
            (self._work / "kept.tar").write_bytes(data)

    # -- QMP and the command console --------------------------------------------------------

    def qmp(self, command: str, **arguments: Any) -> Any:
        """One QMP command on a fresh monitor connection; its ``return`` value."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self._work / "qmp.sock"))
            f = s.makefile("rwb")

            def call(cmd: str, args: dict[str, Any] | None = None) -> Any:
                msg: dict[str, Any] = {"execute": cmd}
                if args:
                    msg["arguments"] = args
                f.write(json.dumps(msg).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        return None  # QEMU quit
                    reply = json.loads(line)
                    if "error" in reply:
                        raise DeviceError(f"QMP {cmd}: {reply['error'].get('desc')}")
                    if "return" in reply:
                        return reply["return"]

            f.readline()  # greeting
            call("qmp_capabilities")
            return call(command, arguments)

    def _cmd_send(self, data: bytes, timeout: float) -> None:
        if self._cmd is None:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(timeout)
            s.connect(str(self._work / "cmd.sock"))
            self._cmd = s
        self._cmd.sendall(data)

    def _cmd_recv(self, deadline: float) -> None:
        assert self._cmd is not None
        self._cmd.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = self._cmd.recv(65536)
        except TimeoutError:
            return
        if not chunk:
            raise DeviceError(f"{self.name}: the command console closed")
        self._cmd_buf = (self._cmd_buf + chunk.replace(b"\r\n", b"\n"))[-1024 * 1024:]

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, what: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self._work / f"{what}.out", "ab")
        try:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()

    def _wait_path(self, path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
        deadline = time.monotonic() + 15
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = (self._work / f"{what}.out").read_text(errors="replace")[-800:]
                self.stop()
                raise DeviceError(f"{self.name}: {what} did not start: {out.strip()}")
            time.sleep(0.02)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes] | None, what: str) -> None:
        if proc is None:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not end on SIGTERM; killing it", what)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
