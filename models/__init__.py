"""edgeward.models."""
