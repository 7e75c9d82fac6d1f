"""Other consumer groups' committed offsets on the in-memory broker (DLQ replay positions)."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.memory.broker import InMemoryBroker
from application.errors import GroupInUse
from application.messages import TopicPartition
from application.ports import GroupOffsets


class InMemoryGroupOffsets(GroupOffsets):
    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    def committed(self, group_ids: Sequence[str], topic: str) -> dict[str, dict[TopicPartition, int]]:
        partitions = [TopicPartition(topic, number) for number in range(self._broker.topics().get(topic, 0))]
        found: dict[str, dict[TopicPartition, int]] = {}
        for group in group_ids:
            offsets = {partition: self._broker.committed(group, partition) for partition in partitions}
            found[group] = {partition: offset for partition, offset in offsets.items() if offset is not None}
        return found

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        for group in group_ids:
            if not self._broker.delete_group(group):
                raise GroupInUse(f"consumer group {group} has active members")
