"""The backend: the verifier service's MQTT side and the fleet store (``edgeward verifier run``)."""
