"""Topic administration for the in-memory broker."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.memory.broker import InMemoryBroker
from application.ports import TopicAdmin, TopicReport, TopicSpec, created_detail


class InMemoryAdmin(TopicAdmin):
    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> list[TopicReport]:
        reports = []
        for spec in specs:
            if self._broker.create_topic(spec.name, spec.partitions, max_message_bytes=spec.max_message_bytes):
                reports.append(TopicReport(spec.name, "created", created_detail(spec)))
                continue
            actual = self._broker.topics()[spec.name]
            if actual != spec.partitions:
                reports.append(
                    TopicReport(spec.name, "mismatch", f"has {actual} partitions, configured {spec.partitions}")
                )
            else:
                reports.append(TopicReport(spec.name, "exists", f"{actual} partitions"))
        return reports

    def max_message_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        """In memory a topic without a limit takes anything, so only topics with one are reported."""
        limits = self._broker.message_limits
        return {name: limits[name] for name in topics if name in limits}
