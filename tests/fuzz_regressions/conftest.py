"""Put this folder (fuzz_targets) and fuzz/ (the targets' helpers) on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1] / "fuzz"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
