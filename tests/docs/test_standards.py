"""docs/STANDARDS.md cannot drift from the code: every module and test a row names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "STANDARDS.md"
STATUSES = {"full", "partly", "no", "n/a"}


def rows(page: Path = PAGE) -> list[list[str]]:
    out = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] not in ("provision", "threat", "recommendation"):
                out.append(cells)
    return out


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def cited(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_row_has_a_status_and_evidence_where_it_claims_one() -> None:
    all_rows = rows()
    assert len(all_rows) >= 30
    for cells in all_rows:
        assert len(cells) == 6, cells
        provision, _asks, status, code, tests, _maker = cells
        assert status in STATUSES, f"{provision}: status {status!r}"
        if status in ("full", "partly"):
            assert cited(code) and cited(tests), f"{provision}: a {status} row cites code and a test"
        if status == "n/a":
            assert _maker, f"{provision}: say why it does not apply"


def missing_citations(page: Path = PAGE) -> list[str]:
    missing = []
    for cells in rows(page):
        for token in cited(cells[3]) + cited(cells[4]):
            if token.startswith("../"):
                continue
            path, _, name = token.partition("::")
            p = REPO / path
            if not p.exists():
                missing.append(f"{cells[0]}: {path} does not exist")
            elif name and name not in _test_names(p):
                missing.append(f"{cells[0]}: {path} has no test {name}")
    return missing


def test_every_cited_module_and_test_exists() -> None:
    missing = missing_citations()
    assert not missing, "\n".join(missing)


def test_the_drift_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "S.md"
    page.write_text("| provision | a | s | c | t | m |\n|---|---|---|---|---|---|\n"
                    "| x | y | full | `core/nope.py` | `tests/docs/test_standards.py::test_gone` | |\n")
    assert missing_citations(page) == [
        "x: core/nope.py does not exist", "x: tests/docs/test_standards.py has no test test_gone"]


def test_security_policy_states_contact_timelines_and_versions() -> None:
    """EN 303 645 5.2: a public policy that says how to report, what happens, and for which
    versions."""
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    for must in ("Reporting a vulnerability", "Acknowledgement within", "Supported versions",
                 "coordinated", "days"):
        assert must in text, must
