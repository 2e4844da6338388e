from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ (fixtures_mqtt) and tests/agent (agent_helpers) for --import-mode=importlib
for _p in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from fixtures_mqtt import Mosquitto, TestCA  # noqa: E402


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def mosquitto(tmp_path: Path, test_ca: TestCA) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", test_ca)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
