"""The saved fuzz corpus still means what it was made for, and every seed passes the oracle.

If a seed stops passing, either the parser regressed or the corpus is stale
(``python fuzz/make_corpus.py`` remakes it); `make fuzz-ci` starts from these seeds.
"""

from __future__ import annotations

import _common
import pytest
from _common import run_one
from fuzz_targets import FUZZ_DIR, load_target

TARGETS = ("cbor", "cose", "manifest", "tflite", "litert", "evidence", "tpm_quote", "envelope",
           "e2eack", "commands", "frames", "toml")


def test_every_target_has_a_saved_corpus():
    from run import TARGETS as RUN_TARGETS

    assert set(RUN_TARGETS) == set(TARGETS)
    for t in TARGETS:
        seeds = list((FUZZ_DIR / "corpus" / t).iterdir())
        assert seeds, t
    total = sum(p.stat().st_size for p in (FUZZ_DIR / "corpus").rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024  # a small corpus: a few MB at most


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_passes_the_oracle(target):
    one = load_target(target).setup()
    try:
        for seed in sorted((FUZZ_DIR / "corpus" / target).iterdir()):
            run_one(one, seed.read_bytes())
    finally:
        worker = getattr(one, "worker", None)  # the LiteRT subprocess of the litert target
        if worker is not None:
            worker.close()


def test_evidence_seed_is_affirming_so_the_fuzzer_starts_deep():
    """The attester's evidence in the corpus is fresh, enrolled and matches the reference values
    in fuzz/world (a stale corpus would only exercise the first refusal)."""
    load_target("evidence")
    import _world

    from edgeward.attestation.appraisal import Policy
    from edgeward.attestation.nonces import NoncePolicy, Session
    from edgeward.attestation.refvalues import open_refvalues
    from edgeward.attestation.service.verifier import Verifier
    from edgeward.attestation.service.verifier_store import Store

    w = _world.world()
    rv = open_refvalues(_world.REFVALUES.read_bytes(), w.vendor.public)
    seeds = [p.read_bytes() for p in (FUZZ_DIR / "corpus" / "evidence").iterdir()]
    evidence = next(s[1:] for s in seeds if s[0] == 0)
    store = Store(":memory:")
    store.put_session(Session(_world.NONCE, _world.DEVICE, _world.NOW - 1, _world.NOW + 59))
    v = Verifier(store=store, ear_key=w.ear_key, maker_cas=[w.ca_cert], refvalues={rv.board: rv},
                 policy=Policy(software_keys="affirming"),
                 nonces=NoncePolicy(ttl=60), clock=lambda: _world.NOW)
    try:
        res = v.verify(evidence)
    finally:
        v.close()
    assert res.device == _world.DEVICE
    assert res.ear.status_name == "affirming", res.ear.reasons


def test_oracle_treats_a_non_edgeward_exception_as_a_bug():
    def one(data: bytes) -> None:
        if data == b"bug":
            raise KeyError("x")
        from edgeward.core.errors import MalformedInputError

        raise MalformedInputError("clean")

    run_one(one, b"fine")
    with pytest.raises(KeyError):
        run_one(one, b"bug")
    assert _common.signature_of(KeyError()).startswith("KeyError@")
