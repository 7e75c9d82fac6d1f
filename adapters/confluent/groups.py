"""Other consumer groups' committed offsets, through confluent-kafka's AdminClient (DLQ replay positions)."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException

from adapters.confluent.admin import ConfluentAdmin
from adapters.confluent.config import failures, unavailable
from application.errors import GroupInUse
from application.messages import TopicPartition
from application.ports import GroupOffsets

_TIMEOUT_S = 15.0


class ConfluentGroupOffsets(ConfluentAdmin, GroupOffsets):
    def committed(self, group_ids: Sequence[str], topic: str) -> dict[str, dict[TopicPartition, int]]:
        # librdkafka lists one group per request: send them all, then wait for each.
        futures = {
            group: self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=_TIMEOUT_S
            )[group]
            for group in group_ids
        }
        found: dict[str, dict[TopicPartition, int]] = {}
        for group, future in futures.items():
            try:
                listed = future.result().topic_partitions or []
            except KafkaException as error:
                raise unavailable(error, self._servers) from None
            found[group] = {
                TopicPartition(p.topic, p.partition): p.offset
                for p in listed
                if p.topic == topic and p.error is None and p.offset >= 0
            }
        return found

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        if not group_ids:
            return
        futures = self._admin.delete_consumer_groups(list(group_ids), request_timeout=_TIMEOUT_S)
        for group, failure in failures(futures):
            if failure.code() == KafkaError.GROUP_ID_NOT_FOUND:
                continue  # never committed anything: nothing to forget
            if failure.code() == KafkaError.NON_EMPTY_GROUP:
                raise GroupInUse(f"consumer group {group} has active members")
            raise unavailable(KafkaException(failure), self._servers)
