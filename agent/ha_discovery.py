"""Optional Home Assistant MQTT discovery, so a smart-home owner sees the agent as a device.

Publishes the standard retained discovery messages
``<prefix>/<component>/<device>/<object>/config`` (JSON, as Home Assistant expects) for three
entities, all reading one retained JSON state topic ``edgeward/v1/<device>/ha/state``:

* ``binary_sensor`` *model integrity* (device class ``problem``: ON when a model failed),
* ``sensor`` *attestation* (the last EAR status: affirming, warning, contraindicated, none),
* ``binary_sensor`` *anomaly alarm* (device class ``safety``: ON after an inference-guard event).

These messages are status, not reports: they are latest-wins and retained, so they bypass the
outbox on purpose. Availability follows the agent's own ``status`` topic (birth and will).
``payloads`` are pure; :meth:`HomeAssistant.announce` and :meth:`update` publish through the
transport given to them.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .envelope import topic


class Publisher(Protocol):
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        expiry: int | None = None,
    ) -> int | None: ...


class HomeAssistant:
    def __init__(self, device: str, prefix: str = "homeassistant") -> None:
        self.device = device
        self.prefix = prefix
        self.state_topic = f"edgeward/v1/{device}/ha/state"
        self.state: dict[str, Any] = {"models": "OFF", "attestation": "none", "anomaly": "OFF"}

    def payloads(self) -> list[tuple[str, bytes]]:
        dev = {
            "identifiers": [f"edgeward_{self.device}"],
            "name": f"edgeward {self.device}",
            "manufacturer": "edgeward",
            "model": "edgeward agent",
        }
        common = {
            "state_topic": self.state_topic,
            "availability_topic": topic(self.device, "status"),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": dev,
        }
        entities = [
            ("binary_sensor", "model_integrity", {
                "name": "Model integrity problem", "device_class": "problem",
                "value_template": "{{ value_json.models }}",
                "payload_on": "ON", "payload_off": "OFF"}),
            ("sensor", "attestation", {
                "name": "Attestation", "icon": "mdi:shield-check",
                "value_template": "{{ value_json.attestation }}"}),
            ("binary_sensor", "anomaly", {
                "name": "Inference anomaly", "device_class": "safety",
                "value_template": "{{ value_json.anomaly }}",
                "payload_on": "ON", "payload_off": "OFF"}),
        ]
        out = []
        for component, obj, extra in entities:
            cfg = {**common, **extra, "unique_id": f"edgeward_{self.device}_{obj}",
                   "object_id": f"edgeward_{self.device}_{obj}"}
            out.append((f"{self.prefix}/{component}/{self.device}/{obj}/config",
                        json.dumps(cfg, sort_keys=True).encode()))
        return out

    def announce(self, pub: Publisher) -> None:
        for t, p in self.payloads():
            pub.publish(t, p, qos=1, retain=True)
        self._publish_state(pub)

    def update(
        self,
        pub: Publisher,
        *,
        models_ok: bool | None = None,
        attestation: str | None = None,
        anomaly: bool | None = None,
    ) -> None:
        if models_ok is not None:
            self.state["models"] = "OFF" if models_ok else "ON"
        if attestation is not None:
            self.state["attestation"] = attestation
        if anomaly is not None:
            self.state["anomaly"] = "ON" if anomaly else "OFF"
        self._publish_state(pub)

    def _publish_state(self, pub: Publisher) -> None:
        pub.publish(self.state_topic, json.dumps(self.state, sort_keys=True).encode(),
                    qos=1, retain=True)
