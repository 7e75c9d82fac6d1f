"""What the two Kafka clients' sources share: the group they join, how, and the state that follows from it."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.kafka_connection import KafkaConnection
from application.ports import MessageSource


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    group_id: str
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 45_000
    isolation_level: str = "read_committed"
    extra: Mapping[str, Any] = field(default_factory=dict)  # client properties on top of ours


class KafkaSource(MessageSource):
    """A consumer-group member on a Kafka cluster; each client's subclass creates its consumer in ``_start``."""

    def __init__(
        self,
        connection: KafkaConnection,
        group_id: str,
        *,
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 45_000,
        isolation_level: str = "read_committed",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._servers = connection.bootstrap_servers
        self._connection = connection
        self._group_id = group_id
        self._session_timeout_s = session_timeout_ms / 1000
        self._topics: list[str] = []
        self._start(ConsumerOptions(group_id, auto_offset_reset, session_timeout_ms, isolation_level, extra or {}))

    @abstractmethod
    def _start(self, options: ConsumerOptions) -> None:
        """Create the client's consumer (no I/O yet); InvalidConfiguration for a setting it refuses."""
