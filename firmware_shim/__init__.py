"""edgeward.firmware_shim."""
