"""edgeward.attestation: remote attestation after IETF RATS (RFC 9334).

Public API (see docs/ATTESTATION.md):

* :class:`edgeward.attestation.attester.Attester` builds signed evidence (EAT, RFC 9711) from
  AGENT.toml (:func:`edgeward.attestation.config.load_attester_config`) and a nonce;
* :class:`edgeward.attestation.service.verifier.Verifier` issues challenges, enrolls
  devices, appraises evidence and returns signed EARs
  (:func:`edgeward.attestation.config.load_verifier_config`);
* :func:`edgeward.attestation.ear.check_ear` is the relying party's offline check.

Pure cores: :mod:`.evidence`, :mod:`.appraisal`, :mod:`.ear`, :mod:`.nonces`,
:mod:`.refvalues`, :mod:`.enroll`, :mod:`.tpm_quote`, :mod:`.claims`. Edges: :mod:`.attester`,
:mod:`.measure`, :mod:`.config`. Server side (never on a device): :mod:`.service`.
Nothing is imported here, so importing a submodule stays cheap.
"""
