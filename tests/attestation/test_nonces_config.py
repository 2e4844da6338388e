"""Pure cores and configuration: challenge sessions with an injected clock; config errors."""

from __future__ import annotations

import pytest

from edgeward.attestation.config import load_attester_config, load_verifier_config
from edgeward.attestation.nonces import NoncePolicy
from edgeward.core.errors import ConfigError, FreshnessError, ReplayError


def test_nonce_sessions_single_use_bound_and_expiring():
    p = NoncePolicy(ttl=60, nonce_bytes=16)
    s = p.issue("lock-1", now=1000.0)
    assert len(s.nonce) == 16 and s.expires == 1060.0
    p.check(s, nonce=s.nonce, device="lock-1", now=1059.9)
    with pytest.raises(FreshnessError, match="expired"):
        p.check(s, nonce=s.nonce, device="lock-1", now=1060.0)
    with pytest.raises(FreshnessError, match="issued to device"):
        p.check(s, nonce=s.nonce, device="lock-2", now=1001.0)
    with pytest.raises(FreshnessError, match="never issued"):
        p.check(None, nonce=b"x" * 16, device="lock-1", now=1001.0)
    import dataclasses

    with pytest.raises(ReplayError):
        p.check(dataclasses.replace(s, used_at=1002.0), nonce=s.nonce, device="lock-1",
                now=1003.0)


def test_nonce_policy_refuses_short_nonces():
    with pytest.raises(ValueError):
        NoncePolicy(nonce_bytes=8)
    assert len({NoncePolicy().issue("d", 0).nonce for _ in range(100)}) == 100


def test_store_consumes_a_nonce_once(tmp_path):
    from edgeward.attestation.service.verifier_store import Store

    st = Store(tmp_path / "s.sqlite")
    s = NoncePolicy().issue("d", 5.0)
    st.put_session(s)
    st.record_appraisal(device=None, nonce=s.nonce, now=6.0, status=2,
                        evidence_sha256=b"h" * 32, ear=b"e", bootcount=None)
    got = st.session(s.nonce)
    assert got is not None and got.used_at == 6.0
    with pytest.raises(ReplayError):
        st.record_appraisal(device=None, nonce=s.nonce, now=7.0, status=2,
                            evidence_sha256=b"h" * 32, ear=b"e", bootcount=None)
    st.close()
    # persisted across reopen
    st = Store(tmp_path / "s.sqlite")
    got = st.session(s.nonce)
    assert got is not None and got.used_at == 6.0
    st.close()


def test_attack_second_name_for_an_enrolled_key_is_refused_by_the_store(tmp_path):
    """Attack: enrolling a stolen key under a second device name. The store says so in an
    edgeward error (chained to SQLite's), and the first enrollment stands."""
    import sqlite3

    from edgeward.attestation.service.verifier_store import DeviceRecord, Store
    from edgeward.core.errors import UnknownDeviceError

    st = Store(tmp_path / "s.sqlite")
    st.put_device(DeviceRecord("lock-1", b"k" * 32, b"spki", "x509", "CA", 1.0, None))
    with pytest.raises(UnknownDeviceError, match="already enrolled under another device name") as e:
        st.put_device(DeviceRecord("lock-2", b"k" * 32, b"spki", "x509", "CA", 2.0, None))
    assert isinstance(e.value.__cause__, sqlite3.IntegrityError)
    first = st.device_by_key(b"k" * 32)
    assert first is not None and first.device == "lock-1" and st.device("lock-2") is None
    st.close()


def test_store_failures_are_device_errors_not_sqlite_errors(tmp_path):
    import sqlite3

    from edgeward.attestation.service.verifier_store import Store
    from edgeward.core.errors import DeviceError

    st = Store(tmp_path / "s.sqlite")
    st.close()  # every use of a closed connection is a sqlite3.ProgrammingError
    for call in (lambda: st.session(b"n" * 16), lambda: st.device("d"),
                 lambda: st.history("d")):
        with pytest.raises(DeviceError) as e:
            call()
        assert isinstance(e.value.__cause__, sqlite3.Error)


def test_agent_config_errors_name_file_and_key(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('[device]\nname = "lock 1"\nboard = "b"\nkey_file = "k"\n')
    with pytest.raises(ConfigError, match=r"device\.name"):
        load_attester_config(p)
    p.write_text('[device]\nname = "lock-1"\nboard = "b"\n')
    with pytest.raises(ConfigError, match="key_file"):
        load_attester_config(p)
    p.write_text('[device]\nname = "l"\nboard = "b"\nkey_file = "k"\n[attestation]\npcr = [1]\n')
    with pytest.raises(ConfigError, match="not a known setting"):
        load_attester_config(p)
    p.write_text('[device]\nname = "l"\nboard = "b"\nkey = "tpm"\n')
    cfg = load_attester_config(p)
    assert cfg.key == "tpm" and cfg.tpm_tcti == "device:/dev/tpmrm0" and cfg.pcrs == tuple(range(8))


def test_verifier_config_requires_a_maker_ca_unless_tofu(tmp_path):
    p = tmp_path / "v.toml"
    p.write_text('[verifier]\nkey_file = "k.pem"\n[refvalues]\nvendor_keys = "v.pem"\ndir = "r"\n')
    with pytest.raises(ConfigError, match="maker_cas"):
        load_verifier_config(p)
    p.write_text(p.read_text() + "[enrollment]\ntofu = true\n[limits]\nmax_cbor_depth = 8\n")
    cfg = load_verifier_config(p)
    assert cfg.tofu and cfg.limits.max_cbor_depth == 8 and cfg.nonce_ttl == 60.0


def test_attester_falls_back_to_the_agent_tables(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('[device]\nname = "l"\nboard = "b"\nkey = "tpm"\n[agent]\nstate_dir = "st"\n'
                 '[models]\ntrust = "t.pem"\n[[models.model]]\npath = "m/a.tflite"\nname = "a"\n'
                 'sig = "m/a.sig"\n')
    cfg = load_attester_config(p)
    assert cfg.models == (tmp_path / "m/a.tflite",)
    assert cfg.model_sigs == ((tmp_path / "m/a.tflite", tmp_path / "m/a.sig"),)
    assert cfg.state_dir == tmp_path / "st"
