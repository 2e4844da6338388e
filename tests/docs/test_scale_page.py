"""docs/SCALE.md runs as written (tests/walkthrough.py): the shipped Mosquitto on loopback, two
verifier workers on the $share subscription with their metrics and health endpoints, the broker
SIGKILLed and started again and both workers ready again. Its config-only blocks (```toml, and
the EMQX ACL, which has no language) are not shell and are not run."""

from __future__ import annotations

from pathlib import Path

from walkthrough import REPO, blocks, free_port, port_free, run_page


def test_scale_walkthrough_runs_as_written(tmp_path: Path) -> None:
    metrics = free_port()
    while metrics + 1 > 65535 or not port_free(metrics + 1):  # the second worker takes PORT + 1
        metrics = free_port()
    failures = run_page(REPO / "docs" / "SCALE.md", tmp_path,
                        env_extra={"HOME": str(tmp_path), "MQTT_PORT": str(free_port()),
                                   "METRICS_PORT": str(metrics)})
    assert not failures, "\n\n".join(failures)


def test_scale_page_runs_every_shell_block() -> None:
    """No shell block of the page is skipped: what it shows is what the test ran."""
    bs = blocks(REPO / "docs" / "SCALE.md")
    assert len(bs) >= 4 and not [b.where for b in bs if b.skip]
