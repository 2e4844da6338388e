"""edgeward.agent."""
