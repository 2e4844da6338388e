"""The measured-boot event log in evidence, appraised boot component by boot component against a
real swtpm: the TPM extends PCRs with events built into a log, quotes them, the attester carries
the log, and the verifier replays it against the quoted PCRs and the board's reference values.
Every altered, reordered, foreign, truncated, oversized or malformed log ends in a verdict."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.attestation import claims as C
from edgeward.attestation.bootlog import MAX_EVENT_LOG_BYTES, appraise_boot_log, component_name
from edgeward.attestation.config import load_attester_config
from edgeward.firmware_shim.linux import eventlog as E

KERNEL = b"\x7fELF kernel 6.6.31-v8 " * 64
INITRD = b"initramfs " * 128
DTB = b"\xd0\x0d\xfe\xed bcm2711-rpi-4-b.dtb"
BOOTARGS = b"console=serial0,115200 root=/dev/mmcblk0p2 rootwait"
SEP = b"\0\0\0\0"

# (pcr, event type, event data, what was measured): U-Boot's measured boot, as it logs it
BOOT = [
    (0, 0x8, b"U-Boot 2024.04", b"U-Boot 2024.04"),   # EV_S_CRTM_VERSION
    (1, 0xA, b"bootargs\0", BOOTARGS),                  # EV_PLATFORM_CONFIG_FLAGS
    (4, 0xC, b"linux\0", KERNEL),                       # EV_COMPACT_HASH
    (4, 0xC, b"initrd\0", INITRD),
    (5, 0xB, b"dts\0", DTB),                            # EV_TABLE_OF_DEVICES
    *((pcr, 0x4, SEP, SEP) for pcr in range(8)),        # EV_SEPARATOR
]


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def log_of(events) -> bytes:
    return E.spec_id_event({E.ALG_SHA256: 32}) + b"".join(
        E.encode_event(pcr, t, {E.ALG_SHA256: sha(image)}, data) for pcr, t, data, image in events)


REFERENCE = {
    "U-Boot 2024.04": frozenset({sha(b"U-Boot 2024.04")}),
    "bootargs": frozenset({sha(BOOTARGS)}),
    "linux": frozenset({sha(KERNEL)}),
    "initrd": frozenset({sha(INITRD)}),
    "dts": frozenset({sha(DTB)}),
    "EV_SEPARATOR": frozenset({sha(SEP)}),
}


@pytest.fixture
def boot(tmp_path, swtpm, world_factory):
    """A TPM device whose boot is measured into the swtpm, its log in a file the attester
    reads, and reference values with the boot components; ``boot.measure(events)``."""
    from edgeward.firmware_shim.linux.tpm import TpmSigner

    signer = TpmSigner(swtpm.tcti)
    w = world_factory(tmp_path, signer=signer, key_kind="tpm", tcti=swtpm.tcti)
    w.log_path = tmp_path / "binary_bios_measurements"
    w.attester.config = dataclasses.replace(w.attester.config, event_log=w.log_path)

    def measure(events) -> None:
        for pcr, _t, _data, image in events:
            signer.extend_pcr(pcr, sha(image))

    w.measure = measure
    measure(BOOT)
    w.install_refvalues(w.refvalues(require_tpm=True, boot_components=REFERENCE))
    yield w
    signer.close()


def appraise(w, log: bytes | None):
    if log is None:
        w.log_path.unlink(missing_ok=True)
    else:
        w.log_path.write_bytes(log)
    return w.verifier.verify(w.fresh_evidence()).ear


def test_a_good_boot_log_is_appraised_component_by_component_and_affirming(boot) -> None:
    ear = appraise(boot, log_of(BOOT))
    assert ear.affirming, ear.reasons
    assert ear.vector.hardware == C.GENUINE_HARDWARE
    assert any("its 13 boot component event(s) match the reference values" in r
               for r in ear.reasons)


def test_attack_edited_event_hides_a_modified_kernel(boot) -> None:
    # The TPM measured a patched kernel; the attacker edits the log's digest back to the
    # approved one. The log no longer replays to the quoted PCR 4.
    boot.measure([(4, 0xC, b"linux\0", b"rootkit")])
    events = [*BOOT, (4, 0xC, b"linux\0", KERNEL)]
    ear = appraise(boot, log_of(events))
    assert ear.status == C.TIER_CONTRAINDICATED
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert any("does not replay to the quoted PCR(s) 4" in r for r in ear.reasons)


def test_attack_modified_kernel_logged_honestly_is_named_contraindicated(boot) -> None:
    boot.measure([(4, 0xC, b"linux\0", b"patched kernel")])
    ear = appraise(boot, log_of([*BOOT, (4, 0xC, b"linux\0", b"patched kernel")]))
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert any("boot component(s) 'linux' have digests that are not in the reference" in r
               for r in ear.reasons)


def test_attack_reordered_events_do_not_replay(boot) -> None:
    swapped = [BOOT[0], BOOT[1], BOOT[3], BOOT[2], *BOOT[4:]]  # initrd before linux on PCR 4
    ear = appraise(boot, log_of(swapped))
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert any("does not replay to the quoted PCR(s) 4" in r for r in ear.reasons)


def test_attack_log_of_another_boot_does_not_match_the_quote(boot) -> None:
    # A log copied from a clean device (or this one's previous boot), while this boot measured
    # one more thing and the log that would show it is withheld.
    boot.measure([(5, 0xB, b"overlay\0", b"evil overlay")])
    ear = appraise(boot, log_of(BOOT))
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME
    assert any("does not replay to the quoted PCR(s) 5" in r for r in ear.reasons)
    ear = appraise(boot, log_of(BOOT[:-3]))  # cut short: the last separators are missing too
    assert ear.vector.executables == C.CONTRAINDICATED_RUNTIME


def test_unknown_boot_component_is_reported_by_its_name_escaped(boot) -> None:
    name = b"evil\nexecutables: approved\x1b[2J"
    boot.measure([(4, 0xD, name, b"module")])
    ear = appraise(boot, log_of([*BOOT, (4, 0xD, name, b"module")]))
    assert ear.vector.executables == C.UNRECOGNIZED_RUNTIME and ear.status == C.TIER_WARNING
    (line,) = [r for r in ear.reasons if "are not in the reference values" in r]
    assert "'evil\\nexecutables: approved\\x1b[2J'" in line
    assert not any("\n" in r or "\x1b" in r for r in ear.reasons)


@pytest.mark.parametrize(("log", "says"), [
    (lambda good: good[:-7], "boot event log is malformed (event log is truncated"),
    # the attester does not carry a log it cannot (the verifier then says there is none)
    (lambda good: good + bytes(MAX_EVENT_LOG_BYTES), "carries no boot event log"),
    (lambda good: b"\x89PNG\r\n\x1a\n" + good, "boot event log is malformed"),
    (lambda good: E.build_event_log([(4, 0xD, b"x")], algs=(E.ALG_SHA1,)), "no bank 0x000b"),
    (lambda good: None, "carries no boot event log"),
])
def test_truncated_oversized_malformed_or_missing_log_is_a_warning_verdict(boot, log,
                                                                          says) -> None:
    ear = appraise(boot, log(log_of(BOOT)))
    assert ear.vector.executables == C.UNRECOGNIZED_RUNTIME, ear.reasons
    assert ear.vector.hardware == C.GENUINE_HARDWARE  # the quote itself is fine
    assert any(says in r for r in ear.reasons), ear.reasons


def test_oversized_log_from_a_hostile_device_is_a_warning_verdict(boot) -> None:
    from edgeward.attestation.evidence import sign_evidence

    ev = boot.attester.claims(boot.verifier.challenge("lock-0001"))
    big = log_of(BOOT) + bytes(MAX_EVENT_LOG_BYTES)
    token = sign_evidence(dataclasses.replace(ev, event_log=big), boot.attester.signer,
                          x5chain=boot.attester.cert_chain)
    ear = boot.verifier.verify(token).ear
    assert ear.vector.executables == C.UNRECOGNIZED_RUNTIME
    assert any("is over the limit of 32768" in r for r in ear.reasons), ear.reasons


def test_a_software_key_log_is_not_appraised(world) -> None:
    ev = world.attester.claims(world.verifier.challenge("lock-0001"))
    from edgeward.attestation.evidence import sign_evidence

    token = sign_evidence(dataclasses.replace(ev, event_log=log_of(BOOT)), world.attester.signer,
                          x5chain=world.attester.cert_chain)
    ear = world.verifier.verify(token).ear
    assert any("boot event log not appraised: no verified TPM quote" in r for r in ear.reasons)


def test_event_log_setting(tmp_path) -> None:
    from fixtures_attestation import agent_toml

    cfg = load_attester_config(agent_toml(tmp_path))
    assert str(cfg.event_log) == "/sys/kernel/security/tpm0/binary_bios_measurements"
    cfg = load_attester_config(agent_toml(tmp_path, extra='event_log = "boot/log.bin"'))
    assert cfg.event_log == tmp_path / "boot" / "log.bin"
    assert load_attester_config(agent_toml(tmp_path, extra='event_log = ""')).event_log is None


def test_component_names() -> None:
    ev = E.parse_event_log(log_of(BOOT)).events
    assert [component_name(e) for e in ev[:5]] == ["U-Boot 2024.04", "bootargs", "linux",
                                                   "initrd", "dts"]
    assert component_name(ev[5]) == "EV_SEPARATOR"  # binary data: named by its type
    binary = E.parse_event_log(log_of([(4, 0x80000003, b"\x01\x02\x00abc", b"app")])).events[0]
    assert component_name(binary) == "EV_EFI_BOOT_SERVICES_APPLICATION"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 700))
def test_fuzzed_logs_always_give_findings_never_an_exception(junk: bytes, cut: int) -> None:
    good = log_of(BOOT)
    quoted = E.parse_event_log(good).replay()
    for data in (junk, good[:cut] + junk, good + junk, good[:cut]):
        for value, reason in appraise_boot_log(data, quoted, REFERENCE):
            assert value in (None, C.UNRECOGNIZED_RUNTIME, C.CONTRAINDICATED_RUNTIME)
            assert reason and "\n" not in reason


def test_boot_components_round_trip_through_the_vendors_toml_and_signed_cbor() -> None:
    from edgeward.attestation import refvalues as R
    from edgeward.core import keys
    from edgeward.core.errors import ConfigError, MalformedInputError
    from edgeward.core.tomlconf import Section

    comps: list[dict] = [{"name": "linux", "digests": [sha(KERNEL).hex()]},
                         {"name": "EV_SEPARATOR", "digests": [sha(SEP).hex()]}]
    doc = {"board": "rpi4b", "boot_components": comps}
    rv = R.from_toml(Section(doc, source="rv.toml"), issued=1)
    assert rv.boot_components == {"linux": {sha(KERNEL)}, "EV_SEPARATOR": {sha(SEP)}}
    vendor = keys.generate("ed25519")
    opened = R.open_refvalues(R.sign_refvalues(rv, vendor), vendor.public)
    assert opened.boot_components == rv.boot_components
    comps[0]["digests"] = ["abcd"]
    with pytest.raises(ConfigError, match=r"boot_components\[0\]\.digests\[0\]"):
        R.from_toml(Section(doc, source="rv.toml"), issued=1)
    twice = {**rv.to_cbor(), "boot-components": [{"name": "linux", "digests": []}] * 2}
    with pytest.raises(MalformedInputError, match="listed twice"):
        R.from_cbor(twice)
    with pytest.raises(MalformedInputError, match="at most 256"):
        R.from_cbor({**rv.to_cbor(), "boot-components": [{}] * 257})


def test_the_attester_carries_a_log_it_can_and_says_why_not_otherwise(tmp_path, caplog) -> None:
    from edgeward.attestation.attester import read_event_log

    p = tmp_path / "log.bin"
    assert read_event_log(None) is None and read_event_log(p) is None  # none configured / kept
    p.write_bytes(log_of(BOOT))
    assert read_event_log(p) == log_of(BOOT)
    p.write_bytes(bytes(MAX_EVENT_LOG_BYTES + 1))
    assert read_event_log(p) is None
    assert read_event_log(tmp_path) is None  # unreadable (here: a folder)
    assert "larger than 32768 bytes" in caplog.text and "not readable" in caplog.text
