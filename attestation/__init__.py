"""edgeward.attestation."""
