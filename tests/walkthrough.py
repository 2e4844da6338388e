"""Run the shell blocks of a documentation page as a newcomer would: in order, in an empty folder.

A page's walk-through is its ```sh blocks. Each block runs as one `bash -e` script in the page's
folder (files carry over between blocks, shell variables do not), with the project's `.venv/bin`
first on PATH, so `edgeward` is the installed command.

What a block must show is written in the page itself, so the reader sees it too:

* a comment line of its own right after a command, ``# text``, is output the block must print
  (``...`` stands for anything); a comment at the end of a command line is only a comment;
* an HTML comment before the block, ``<!-- exit 2 -->``, is the exit code the block must end
  with (default 0);
* ``<!-- not run: why -->`` before a block says why it cannot run here (a real device's paths);
  the reason is required, so a page never skips a block silently.

Services: each block runs in a session of its own, so a daemon a page starts in the background
(``edgeward verifier run ... &``) stays in that block's process group; when the page ends, or a
block fails or runs out of time, every such group is stopped (SIGTERM, then SIGKILL), so a page
never leaves a process behind. A page that needs a port uses a variable with its real default,
``${MQTT_PORT:-8883}``, and says so; the test passes a free loopback port in ``env_extra`` (see
:func:`free_port`). A page waits for a service with a bounded loop of its own (``for i in $(seq
50); do ... && break; sleep 0.2; done``); the block's timeout bounds it too. Output goes to a
file, not a pipe, so a background process that keeps its output open cannot hang the block.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"<!--\s*(exit\s+(\d+)|not run:\s*(.+?))\s*-->")


@dataclass
class Block:
    page: str
    line: int
    code: str
    exit_code: int = 0
    skip: str | None = None
    expects: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The ```sh blocks of ``page`` with their directives and expected output."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    exit_code, skip = 0, None
    i = 0
    while i < len(lines):
        m = DIRECTIVE.search(lines[i])
        if m:
            if m.group(2):
                exit_code = int(m.group(2))
            else:
                skip = m.group(3)
        fence = FENCE.match(lines[i].strip())
        if fence:
            lang = fence.group(1)
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body = [ln[len(lines[i]) - len(lines[i].lstrip()):] for ln in lines[start:j]]
            if lang == "sh":
                b = Block(page.name, start, "\n".join(body) + "\n", exit_code, skip)
                prev_is_code = False
                for ln in body:
                    s = ln.strip()
                    if s.startswith("# ") and prev_is_code:
                        b.expects.append(s[2:])
                    else:
                        prev_is_code = bool(s) and not s.startswith("#")
                out.append(b)
            exit_code, skip = 0, None
            i = j + 1
            continue
        i += 1
    return out


def _pattern(expect: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in re.split(r"\s*\.\.\.\s*", expect)]
    return re.compile(r".*?".join(parts))


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now (for a service that takes PORT + 1 too)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for ``env_extra``, e.g. ``{"MQTT_PORT": str(free_port())}``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM every block's process group, wait up to ``grace`` seconds, then SIGKILL what is
    left (each block's shell leads its group: the group id is the shell's pid)."""
    pgids = [p.pid for p in procs]
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in procs:
            p.poll()  # reap a shell that was still running, so its group can empty
        if not any(_alive(g) for g in pgids):
            break
        time.sleep(0.05)
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        if p.poll() is None:
            p.wait(5)


def run_page(page: Path, workdir: Path, env_extra: dict[str, str] | None = None,
             timeout: float = 600) -> list[str]:
    """Run every block of ``page`` in ``workdir``; return the failures, one line each.

    Whatever the blocks left running in the background is stopped before this returns."""
    env = dict(os.environ)
    venv_bin = Path(sys.executable).parent
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env.update(env_extra or {})
    failures: list[str] = []
    groups: list[subprocess.Popen[bytes]] = []
    try:
        for b in blocks(page):
            if b.skip is not None:
                if not b.skip.strip():
                    failures.append(f"{b.where}: a block marked 'not run' must say why")
                continue
            with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
                p = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", b.code], cwd=workdir,
                                     env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                groups.append(p)
                try:
                    rc: int | None = p.wait(timeout)
                except subprocess.TimeoutExpired:
                    rc = None
                out.seek(0)
                text = out.read()
            if rc is None:
                failures.append(f"{b.where}: still running after {timeout:g} s:\n{b.code}\n"
                                f"--- output ---\n{text[-3000:]}")
                break
            if rc != b.exit_code:
                failures.append(f"{b.where}: exit {rc}, the page expects {b.exit_code}:\n"
                                f"{b.code}\n--- output ---\n{text[-3000:]}")
                break  # later blocks build on this one
            for e in b.expects:
                if not _pattern(e).search(text):
                    failures.append(f"{b.where}: output lacks '# {e}':\n{text[-3000:]}")
    finally:
        stop_groups(groups)
    return failures
