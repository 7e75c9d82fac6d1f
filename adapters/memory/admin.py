"""Topic administration for the in-memory broker."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.memory.broker import InMemoryBroker
from application.ports import TopicAdmin, TopicReport, TopicSpec


class InMemoryAdmin(TopicAdmin):
    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> list[TopicReport]:
        reports = []
        for spec in specs:
            if self._broker.create_topic(spec.name, spec.partitions):
                reports.append(TopicReport(spec.name, "created", f"{spec.partitions} partitions"))
                continue
            actual = self._broker.topics()[spec.name]
            if actual != spec.partitions:
                reports.append(
                    TopicReport(spec.name, "mismatch", f"has {actual} partitions, configured {spec.partitions}")
                )
            else:
                reports.append(TopicReport(spec.name, "exists", f"{actual} partitions"))
        return reports
