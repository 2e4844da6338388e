"""Claim keys and values: EAT (RFC 9711), CWT (RFC 8392), EAR and AR4SI. Constants only.

Evidence claims use their registered CBOR keys (RFC 9711 §4 and the IANA "CBOR Web Token (CWT)
Claims" registry): ``eat_nonce`` 10 (§4.1), ``ueid`` 256 (§4.2.1), ``oemid`` 258 (§4.2.3),
``hwmodel`` 259 (§4.2.4), ``hwversion`` 260 (§4.2.5), ``uptime`` 261 (§4.2.11), ``dbgstat`` 263
(§4.2.9), ``bootcount`` 267 (§4.2.13), ``swname`` 270 (§4.2.6), ``swversion`` 271 (§4.2.7),
``measurements`` 273 (§4.2.16), ``submods`` 266 (§4.2.18), ``iat`` 6 (RFC 8392 §3.1.6).

edgeward's private claims live in the CWT private-use range (integers below -65536, RFC 8392
§9.1): the key kind that signed (``"tpm"`` or ``"software"``, so the verifier's policy can
refuse software keys), the device name (the MQTT ``<device>``), and the TPM boot state.
Measurements are one ``measurements-format`` entry (RFC 9711 §4.2.16) whose content format is
:data:`MEASUREMENTS_CONTENT_FORMAT`, a CoAP content-format number from the experimental range
65000..65535 (RFC 7252 §12.3), holding the CBOR map described in ``docs/protocol.cddl``.

Attestation results follow the EAR draft (draft-ietf-rats-ear §3): ``eat_profile`` 265,
``iat`` 6, ``eat_nonce`` 10, ``submods`` 266, ``ear.status`` 1000, ``ear.trustworthiness-vector``
1001, ``ear.raw-evidence`` 1002, ``ear.appraisal-policy-id`` 1003, ``ear.verifier-id`` 1004; the
vector and its values follow AR4SI (draft-ietf-rats-ar4si §2.3).
"""

from __future__ import annotations

from typing import Final

# --- CWT / EAT (RFC 8392, RFC 9711) ------------------------------------------------------------
IAT: Final = 6
EAT_NONCE: Final = 10
UEID: Final = 256
OEMID: Final = 258
HWMODEL: Final = 259
HWVERSION: Final = 260
UPTIME: Final = 261
DBGSTAT: Final = 263
EAT_PROFILE: Final = 265
SUBMODS: Final = 266
BOOTCOUNT: Final = 267
SWNAME: Final = 270
SWVERSION: Final = 271
MEASUREMENTS: Final = 273

CWT_TAG: Final = 61  # RFC 8392 §6: CWT CBOR tag wrapping the COSE message
COSE_SIGN1_TAG: Final = 18
COSE_X5CHAIN: Final = 33  # RFC 9360 §2: x5chain header (device certificate, leaf first)

# dbgstat values (RFC 9711 §4.2.9)
DBG_ENABLED: Final = 0
DBG_DISABLED: Final = 1
DBG_DISABLED_SINCE_BOOT: Final = 2
DBG_DISABLED_PERMANENTLY: Final = 3
DBG_DISABLED_FULLY_AND_PERMANENTLY: Final = 4

# UEID type byte (RFC 9711 §4.2.1.1): RAND
UEID_RAND: Final = 0x01

# --- edgeward private claims (RFC 8392 §9.1 private use) ----------------------------------------
EW_KEY_KIND: Final = -70001  # "tpm" | "software"
EW_DEVICE: Final = -70002  # tstr: device name (MQTT <device>, certificate CN)
EW_EVENT_LOG: Final = -70005  # bstr: the measured-boot event log (TCG crypto-agile); with EW_BOOT
EW_BOOT: Final = -70003  # TPM boot state: {"pcrs": {idx: bstr}, "quote": bstr, "quote-sig": bstr}

MEASUREMENTS_CONTENT_FORMAT: Final = 65100
EVIDENCE_PROFILE: Final = "tag:edgeward.dev,2026:evidence/v1"

# --- EAR (draft-ietf-rats-ear §3) ---------------------------------------------------------------
EAR_STATUS: Final = 1000
EAR_TRUST_VECTOR: Final = 1001
EAR_RAW_EVIDENCE: Final = 1002
EAR_POLICY_ID: Final = 1003
EAR_VERIFIER_ID: Final = 1004
EAR_PROFILE: Final = "tag:github.com,2023:veraison/ear"
EW_REASONS: Final = -70010  # [* tstr]: plain-words reasons for the tiers (private claim)
EW_EAR_DEVICE: Final = -70011  # tstr: device name appraised

# --- AR4SI (draft-ietf-rats-ar4si §2.3) ----------------------------------------------------------
TIER_NONE: Final = 0
TIER_AFFIRMING: Final = 2
TIER_WARNING: Final = 32
TIER_CONTRAINDICATED: Final = 96

TIER_NAMES: Final = {
    TIER_NONE: "none",
    TIER_AFFIRMING: "affirming",
    TIER_WARNING: "warning",
    TIER_CONTRAINDICATED: "contraindicated",
}

# The trustworthiness vector's claims and their CBOR keys (EAR draft §3.1).
VECTOR_CLAIMS: Final = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
VECTOR_KEYS: Final = {name: i for i, name in enumerate(VECTOR_CLAIMS)}

# Values common to every claim (AR4SI §2.3.1)
NO_CLAIM: Final = 0
VERIFIER_MALFUNCTION: Final = 1
CRYPTO_VALIDATION_FAILED: Final = 99

# instance-identity (AR4SI §2.3.2)
TRUSTWORTHY_INSTANCE: Final = 2
UNTRUSTWORTHY_INSTANCE: Final = 96
UNRECOGNIZED_INSTANCE: Final = 97
# configuration (§2.3.3)
APPROVED_CONFIG: Final = 2
UNSAFE_CONFIG: Final = 32
UNSUPPORTABLE_CONFIG: Final = 96
# executables (§2.3.4)
APPROVED_RUNTIME: Final = 2
APPROVED_BOOT: Final = 3
UNSAFE_RUNTIME: Final = 32
UNRECOGNIZED_RUNTIME: Final = 33
CONTRAINDICATED_RUNTIME: Final = 96
# file-system (§2.3.5)
APPROVED_FILES: Final = 2
UNRECOGNIZED_FILES: Final = 32
CONTRAINDICATED_FILES: Final = 96
# hardware (§2.3.6)
GENUINE_HARDWARE: Final = 2
UNSAFE_HARDWARE: Final = 32
CONTRAINDICATED_HARDWARE: Final = 96
UNRECOGNIZED_HARDWARE: Final = 97
# runtime-opaque (§2.3.7)
ENCRYPTED_MEMORY: Final = 2
ISOLATED_MEMORY: Final = 32
VISIBLE_MEMORY: Final = 96
# storage-opaque (§2.3.8)
HW_KEYS_ENCRYPTED_SECRETS: Final = 2
SW_KEYS_ENCRYPTED_SECRETS: Final = 32
UNENCRYPTED_SECRETS: Final = 96
# sourced-data (§2.3.9)
TRUSTED_SOURCES: Final = 2
UNTRUSTED_SOURCES: Final = 32
CONTRAINDICATED_SOURCES: Final = 96


def tier_of(value: int) -> int:
    """The tier a claim value falls in (AR4SI §2.3: 0..1 none, 2..31 affirming, 32..95
    warning, 96..127 contraindicated; 99 crypto failure is contraindicated)."""
    if value in (NO_CLAIM, VERIFIER_MALFUNCTION) or not -128 <= value <= 127:
        return TIER_NONE
    if value < 0:
        return TIER_NONE
    if value < 32:
        return TIER_AFFIRMING
    if value < 96:
        return TIER_WARNING
    return TIER_CONTRAINDICATED
