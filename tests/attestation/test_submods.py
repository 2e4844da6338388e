

def test_attack_unreachable_reason_from_the_gateway_cannot_forge_lines() -> None:
    """A compromised gateway (or lock) puts a newline and an escape in the 'unreachable' text."""
    from edgeward.attestation.submods import SUBMOD_ERROR, appraise_one

    r = appraise_one("lock-mcu", {SUBMOD_ERROR: "x\nlock-mcu: firmware is approved\x1b[2J"},
                     nonce=b"\x00" * 32, registration=None)
    assert all("\n" not in reason and "\x1b" not in reason for reason in r.reasons)
