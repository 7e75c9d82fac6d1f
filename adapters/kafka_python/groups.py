"""Other consumer groups' committed offsets, through kafka-python's KafkaAdminClient (DLQ replay positions).

kafka-python 3 renamed the two calls (``list_group_offsets``, ``delete_groups``) and changed
their results; both generations are supported, as ``kafka-python>=2.2`` promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError

from adapters.kafka_python.admin import KafkaPythonAdmin
from adapters.kafka_python.config import unavailable
from application.errors import GroupInUse
from application.messages import TopicPartition
from application.ports import GroupOffsets

_FORGOTTEN = {"OK", "NoError", "GroupIdNotFoundError"}  # deleted, or never committed anything


class KafkaPythonGroupOffsets(KafkaPythonAdmin, GroupOffsets):
    def committed(self, group_ids: Sequence[str], topic: str) -> dict[str, dict[TopicPartition, int]]:
        admin = self._client()
        found: dict[str, dict[TopicPartition, int]] = {}
        try:
            for group in group_ids:
                if hasattr(admin, "list_group_offsets"):  # kafka-python 3
                    listed: dict[Any, Any] = admin.list_group_offsets({group: None}).get(group, {})
                else:
                    listed = admin.list_consumer_group_offsets(group)
                found[group] = {
                    TopicPartition(tp.topic, tp.partition): meta.offset
                    for tp, meta in listed.items()
                    if tp.topic == topic and meta.offset >= 0
                }
        except KafkaError as error:
            raise unavailable(error, self._servers) from None
        return found

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        if not group_ids:
            return
        admin = self._client()
        try:
            if hasattr(admin, "delete_groups"):  # kafka-python 3: {group: "OK" or an error class name}
                results = dict(admin.delete_groups(list(group_ids)))
            else:  # kafka-python 2: [(group, error class)]
                results = dict(admin.delete_consumer_groups(list(group_ids)))
        except KafkaError as error:
            raise unavailable(error, self._servers) from None
        for group, outcome in results.items():
            name = outcome if isinstance(outcome, str) else getattr(outcome, "__name__", str(outcome))
            if name in _FORGOTTEN:
                continue
            if name == "NonEmptyGroupError":
                raise GroupInUse(f"consumer group {group} has active members")
            raise unavailable(KafkaError(f"deleting consumer group {group}: {name}"), self._servers)
