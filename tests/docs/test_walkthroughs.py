"""Docs run as written: each walk-through page runs, in order, in an empty folder.

The harness is :mod:`walkthrough` (tests/walkthrough.py); its own tests below show that it can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from walkthrough import REPO, blocks, run_page


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
