"""Connection settings shared by every Kafka adapter, in librdkafka's (Java client's) vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Properties given as ``consumer.X`` or ``producer.X`` apply to that client only.
_ROLE_PREFIXES = ("consumer.", "producer.", "admin.")


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap_servers: str
    properties: Mapping[str, str] = field(default_factory=dict)  # e.g. security.protocol, sasl.*, ssl.*

    def for_role(self, role: str) -> dict[str, str]:
        """Shared properties plus this role's ``role.``-prefixed ones (prefix removed), the latter winning."""
        shared = {k: v for k, v in self.properties.items() if not k.startswith(_ROLE_PREFIXES)}
        prefix = f"{role}."
        shared.update({k[len(prefix) :]: v for k, v in self.properties.items() if k.startswith(prefix)})
        return shared
