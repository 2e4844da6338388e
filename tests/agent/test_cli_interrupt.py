"""Ctrl-C ends any command with exit 130 (128 + SIGINT), the shell convention, not 3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_ctrl_c_exits_130(tmp_path) -> None:
    # `edgeward demo` runs for seconds: interrupt it while it works, as a user's Ctrl-C would
    p = subprocess.Popen([sys.executable, "-c", "from edgeward.agent.cli import main; main()",
                          "demo", "--out", str(tmp_path / "d")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a shell's background job ignores SIGINT, and a child inherits that:
                         # give the command the disposition a user's terminal gives it
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (tmp_path / "d").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == "edgeward: interrupted"
