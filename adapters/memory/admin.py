"""Topic administration for the in-memory broker."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.memory.broker import InMemoryBroker
from application.ports import TopicAdmin, TopicSpec


class InMemoryAdmin(TopicAdmin):
    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    def _partition_counts(self, names: Sequence[str]) -> dict[str, int]:
        topics = self._broker.topics()
        return {name: topics[name] for name in names if name in topics}

    def _create_topics(self, specs: Sequence[TopicSpec]) -> set[str]:
        return {
            spec.name
            for spec in specs
            if not self._broker.create_topic(spec.name, spec.partitions, max_message_bytes=spec.max_message_bytes)
        }

    def max_message_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        """In memory a topic without a limit takes anything, so only topics with one are reported."""
        limits = self._broker.message_limits
        return {name: limits[name] for name in topics if name in limits}
