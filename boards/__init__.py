"""edgeward.boards."""
