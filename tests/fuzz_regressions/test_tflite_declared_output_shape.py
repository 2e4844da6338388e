"""Attack: a 12 KB model whose declared shapes hide gigabytes of activations from the validator.

Found by fuzz/fuzz_litert.py (LiteRT 2.3 did not finish within 20 s on a model that passed
``validate()``): the reference CNN with its input declared as [1, 16775432, 8, 1] while the
CONV_2D output still says [1, 8, 8, 16]. LiteRT resizes every output to the shape its kernel
computes, so loading it took more than 9 GB and 90 s (measured by hand with ``ulimit -v``): on a
Pi-class board, an out-of-memory kill of whatever loads it. The validator now requires the
declared output of convolutions and pools to be the computed one. (Not run in LiteRT here: it
would take the machine's memory.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _common import run_one
from fuzz_targets import load_target

from edgeward.core.errors import MalformedModelError
from edgeward.models.tflite.validate import validate

DATA = Path(__file__).resolve().parent / "data" / "cnn_declared_input_1x16775432x8x1.tflite"
CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "tflite"


def test_attack_conv_output_declared_smaller_than_computed_is_refused():
    with pytest.raises(MalformedModelError, match=r"declares output shape \[1, 8, 8, 16\]"):
        validate(DATA.read_bytes())


def test_fuzz_oracles_are_clean_on_it():
    run_one(load_target("tflite").setup(), DATA.read_bytes())
    # The LiteRT target stops at the validator now, so it never starts the runtime on it.
    run_one(load_target("litert").setup(), DATA.read_bytes())


def test_reference_models_declare_the_shapes_their_kernels_compute():
    for seed in sorted(CORPUS.iterdir()):
        validate(seed.read_bytes())
