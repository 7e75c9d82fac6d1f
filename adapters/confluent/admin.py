"""Topic administration with confluent-kafka's AdminClient."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from adapters.confluent.config import (
    failures,
    is_not_authorized,
    is_unreachable,
    reporting_config,
    translate,
    unavailable,
)
from adapters.kafka_connection import KafkaConnection
from application.errors import InvalidConfiguration
from application.ports import MAX_MESSAGE_BYTES, TopicAdmin, TopicSpec, refused_topic, topic_configs

_TIMEOUT_S = 15.0


class ConfluentAdmin(TopicAdmin):
    def __init__(self, connection: KafkaConnection) -> None:
        self._servers = connection.bootstrap_servers
        self._connection = connection
        self.errors, config = reporting_config(connection, "admin", {})
        try:
            self._admin = AdminClient(config)
        except KafkaException as error:
            raise InvalidConfiguration(f"invalid admin configuration: {error.args[0].str()}") from None

    def _translate(self, error: KafkaException | KafkaError, operation: str, topic: str = "") -> Exception:
        self._admin.poll(0)  # serves the error callback, which knows a refused login or TLS handshake
        return translate(
            error, self.errors, operation=operation, resources={"topic": topic}, connection=self._connection
        )

    def _partition_counts(self, names: Sequence[str]) -> dict[str, int]:
        try:
            existing = self._admin.list_topics(timeout=_TIMEOUT_S).topics
        except KafkaException as error:
            raise self._translate(error, "Describe") from None
        self.errors.reachable()
        counts = {}
        for name in names:
            metadata = existing.get(name)
            if metadata is not None and metadata.error is not None and is_not_authorized(metadata.error):
                raise self._translate(metadata.error, "Describe", name)
            if metadata is not None and metadata.error is None:
                counts[name] = len(metadata.partitions)
        return counts

    def _create_topics(self, specs: Sequence[TopicSpec]) -> set[str]:
        topics = [
            NewTopic(
                s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=topic_configs(s)
            )
            for s in specs
        ]
        try:
            futures = self._admin.create_topics(topics, request_timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise self._translate(error, "Create") from None
        concurrently = set()
        for name, failure in failures(futures):
            if failure.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                concurrently.add(name)
            elif is_not_authorized(failure) or failure.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
                raise self._translate(failure, "Create", name) from None
            else:
                raise refused_topic(name, failure.str()) from None
        return concurrently

    def max_message_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
        try:
            futures = self._admin.describe_configs(resources, request_timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise unavailable(error, self._servers) from None
        limits: dict[str, int] = {}
        for resource, future in futures.items():
            try:
                entry = future.result().get(MAX_MESSAGE_BYTES)
            except KafkaException as exception:
                failure: KafkaError = exception.args[0]
                if is_unreachable(failure):
                    raise unavailable(exception, self._servers) from None
                continue  # no such topic, or not allowed to read its configuration: not known
            if entry is not None and entry.value is not None:
                limits[resource.name] = int(entry.value)
        return limits
