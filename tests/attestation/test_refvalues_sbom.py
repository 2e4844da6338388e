"""Reference values may name the release's SBOM digest; the verifier's result says which."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from edgeward.attestation import refvalues as R
from edgeward.core import cbor
from edgeward.core.errors import ConfigError, MalformedInputError
from edgeward.core.tomlconf import Section


def test_sbom_digest_named_in_the_affirming_result(world) -> None:
    digest = hashlib.sha256(b"a CycloneDX document").digest()
    rv = world.refvalues()
    rel = dataclasses.replace(rv.releases[0], sbom=digest)
    world.install_refvalues(dataclasses.replace(rv, releases=(rel,)))
    ear = world.verifier.verify(world.fresh_evidence()).ear
    assert ear.affirming
    assert any(digest.hex() in r for r in ear.reasons), ear.reasons


def test_sbom_round_trips_through_toml_and_cbor() -> None:
    h = "ab" * 32
    doc = {"board": "smartlock-pi4", "releases": [
        {"swversion": "0.1.0", "agent_code": ["cd" * 32], "agent_config": [], "sbom": h}]}
    rv = R.from_toml(Section(doc, source="rv.toml"), issued=1)
    assert rv.releases[0].sbom == bytes.fromhex(h)
    again = R.from_cbor(cbor.loads(cbor.dumps(rv.to_cbor())))
    assert again == rv


@pytest.mark.parametrize("bad", ["zz", "ab" * 31, 5])
def test_sbom_that_is_not_a_sha256_is_refused_in_toml(bad) -> None:
    doc = {"board": "b", "releases": [{"swversion": "0.1.0", "agent_code": [], "sbom": bad}]}
    with pytest.raises(ConfigError):
        R.from_toml(Section(doc, source="rv.toml"), issued=1)


@pytest.mark.parametrize("bad", [b"\x00" * 31, "hex", 7, [b"\x00" * 32]])
def test_sbom_that_is_not_a_sha256_is_refused_in_cbor(bad) -> None:
    doc = {"type": R.DOC_TYPE, "v": 1, "board": "b", "issued": 1,
           "releases": [{"swversion": "0.1.0", "agent-code": [], "sbom": bad}], "models": []}
    with pytest.raises(MalformedInputError):
        R.from_cbor(doc)
