"""Docs run as written: each walk-through page runs, in order, in an empty folder.

The harness is :mod:`walkthrough` (tests/walkthrough.py); its own tests below show that it can fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from walkthrough import REPO, blocks, free_port, port_free, run_page


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    failures = run_page(REPO / "README.md", tmp_path, env_extra={"HOME": str(tmp_path)})
    assert not failures, "\n\n".join(failures)


@pytest.fixture()
def page(tmp_path: Path):
    def write(text: str) -> Path:
        p = tmp_path / "PAGE.md"
        p.write_text(text)
        return p
    return write


def test_harness_reads_blocks_directives_and_expectations(page) -> None:
    p = page("text\n<!-- exit 2 -->\n```sh\necho hi   # a comment\n# hi\n```\n"
             "```python\nprint(1)\n```\n<!-- not run: needs /dev/tpmrm0 -->\n```sh\nx\n```\n")
    bs = blocks(p)
    assert [(b.exit_code, b.skip, b.expects) for b in bs] == [
        (2, None, ["hi"]), (0, "needs /dev/tpmrm0", [])]


def test_harness_fails_on_wrong_exit_code(page, tmp_path: Path) -> None:
    assert run_page(page("```sh\nfalse\n```\n"), tmp_path)
    assert not run_page(page("<!-- exit 1 -->\n```sh\nfalse\n```\n"), tmp_path)


def test_harness_fails_on_missing_output(page, tmp_path: Path) -> None:
    assert run_page(page("```sh\necho hello world\n# hello ... world\n```\n"), tmp_path) == []
    failures = run_page(page("```sh\necho hello\n# goodbye\n```\n"), tmp_path)
    assert failures and "goodbye" in failures[0]


def test_harness_refuses_a_silent_skip(page, tmp_path: Path) -> None:
    assert run_page(page("<!-- not run:  -->\n```sh\nfalse\n```\n"), tmp_path)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_harness_stops_what_a_page_started_in_the_background(page, tmp_path: Path) -> None:
    """A daemon a page starts with `&` (and one that ignores SIGTERM) is gone when it ends."""
    p = page("```sh\nsleep 300 &\necho $! > bg.pid\n"
             "bash -c 'trap \"\" TERM; echo $$ > stubborn.pid; sleep 300' &\n"
             "for i in $(seq 50); do test -s stubborn.pid && break; sleep 0.1; done\n```\n"
             "```sh\necho still here\n# still here\n```\n")
    assert run_page(p, tmp_path) == []
    for name in ("bg.pid", "stubborn.pid"):
        assert _gone(int((tmp_path / name).read_text())), name


def test_harness_stops_background_processes_when_a_block_fails(page, tmp_path: Path) -> None:
    p = page("```sh\nsleep 300 &\necho $! > bg.pid\n```\n```sh\nfalse\n```\n")
    assert run_page(p, tmp_path)
    assert _gone(int((tmp_path / "bg.pid").read_text()))


def test_harness_bounds_a_block_that_never_ends(page, tmp_path: Path) -> None:
    failures = run_page(page("```sh\nsleep 300\n```\n"), tmp_path, timeout=1)
    assert failures and "still running" in failures[0]


def test_attestation_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """docs/ATTESTATION.md: a software-key lock and a swtpm lock reach `affirming`; a lock run
    with a configuration other than the measured one gets `warning`; a replay is refused."""
    port = free_port()
    while port + 1 > 65535 or not port_free(port + 1):  # swtpm takes PORT and PORT + 1
        port = free_port()
    failures = run_page(REPO / "docs" / "ATTESTATION.md", tmp_path,
                        env_extra={"HOME": str(tmp_path), "TPM_PORT": str(port)})
    assert not failures, "\n\n".join(failures)


def test_agent_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """docs/AGENT.md: fleet CA, the shipped broker files on loopback, registration, a verifier
    worker and an agent; the device's reports reach the fleet store and it is affirmed."""
    failures = run_page(REPO / "docs" / "AGENT.md", tmp_path,
                        env_extra={"HOME": str(tmp_path), "MQTT_PORT": str(free_port())})
    assert not failures, "\n\n".join(failures)
