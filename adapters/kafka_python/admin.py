"""Topic administration with kafka-python's KafkaAdminClient.

KafkaAdminClient connects while it is constructed (and raises when it cannot),
so it is created on first use: constructing this adapter never touches the
network, and an unreachable cluster surfaces from ``ensure_topics`` as
BrokerUnavailable, which callers retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    AuthorizationError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConfigurationError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
    for_code,
)

from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python.config import (
    client_config,
    connection_recovered,
    quiet_repeated_client_logs,
    translate_error,
    unavailable,
)
from application.errors import InvalidConfiguration, UnsupportedOperation
from application.ports import MAX_MESSAGE_BYTES, TopicAdmin, TopicSpec, refused_topic, topic_configs

log = logging.getLogger(__name__)

_TIMEOUT_MS = 15_000
# The broker refuses to describe (or this client to ask): asking again will not help.
_CANNOT_DESCRIBE = (
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    UnsupportedVersionError,
)


class KafkaPythonAdmin(TopicAdmin):
    def __init__(self, connection: KafkaConnection, *, timeout_ms: int = _TIMEOUT_MS) -> None:
        self._servers = connection.bootstrap_servers
        self._connection = connection
        self._config = client_config(
            connection, "admin", {"bootstrap_timeout_ms": timeout_ms, "request_timeout_ms": timeout_ms}
        )
        self._admin: Any = None

    def _client(self) -> Any:
        if self._admin is not None:
            return self._admin
        created: list[Any] = []
        make_network_client = self._config.get("kafka_client", KafkaAdminClient.DEFAULT_CONFIG["kafka_client"])

        def network_client(**configs: Any) -> Any:
            client = make_network_client(**configs)
            created.append(client)
            return client

        try:
            self._admin = KafkaAdminClient(**{**self._config, "kafka_client": network_client})
        except (KafkaConfigurationError, ValueError, TypeError) as error:
            self._discard(created)
            raise InvalidConfiguration(f"invalid admin configuration: {error}") from None
        except KafkaError as error:  # could not bootstrap in time
            self._discard(created)  # or its I/O thread would outlive the failed attempt
            raise self._translate(error, "Describe") from None
        quiet_repeated_client_logs()
        return self._admin

    @staticmethod
    def _discard(clients: list[Any]) -> None:
        for client in clients:
            try:
                client.close()
            except Exception as error:  # noqa: BLE001 - best effort after a failed start
                log.debug("discarding a half-started admin client: %s", error)

    def _translate(self, error: BaseException, operation: str, topic: str = "") -> Exception:
        return translate_error(error, self._connection, operation=operation, resources={"topic": topic})

    def _partition_counts(self, names: Sequence[str]) -> dict[str, int]:
        quiet_repeated_client_logs()  # kafka-python's loggers exist now: fold their repeated lines from the start
        admin = self._client()
        try:
            existing = {topic["name"]: topic for topic in admin.describe_topics()}
        except KafkaError as error:
            raise self._translate(error, "Describe") from None
        connection_recovered()
        counts = {}
        for name in names:
            metadata = existing.get(name)
            if metadata is not None and issubclass(for_code(metadata.get("error_code") or 0), AuthorizationError):
                raise self._translate(for_code(metadata["error_code"])(), "Describe", name)
            if metadata is not None and not metadata.get("error_code"):
                counts[name] = len(metadata["partitions"])
        return counts

    def _create_topics(self, specs: Sequence[TopicSpec]) -> set[str]:
        topics: dict[str, dict[str, Any]] = {}
        for spec in specs:
            topics[spec.name] = {"num_partitions": spec.partitions, "replication_factor": spec.replication_factor}
            if spec.max_message_bytes is not None:
                topics[spec.name]["configs"] = topic_configs(spec)
        try:
            created = self._client().create_topics(topics, timeout_ms=_TIMEOUT_MS, raise_errors=False)
        except KafkaError as error:
            raise self._translate(error, "Create") from None
        concurrently = set()
        for result in created["topics"]:
            name = result["name"]
            error_type = for_code(result["error_code"])
            if result["error_code"] == 0:
                continue
            if error_type is TopicAlreadyExistsError:
                concurrently.add(name)
            elif issubclass(error_type, AuthorizationError):
                raise self._translate(error_type(), "Create", name)
            else:
                raise refused_topic(name, result.get("error_message") or error_type.__name__)
        return concurrently

    def max_message_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        admin = self._client()
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, configs={MAX_MESSAGE_BYTES: None}) for name in topics
        ]
        try:
            described = admin.describe_configs(resources, config_filter="all")
        except KafkaError as error:
            raise unavailable(error, self._servers) from None
        limits: dict[str, int] = {}
        for name, configs in (described.get("topic") or {}).items():
            value = (configs or {}).get(MAX_MESSAGE_BYTES, {}).get("value")
            if value is not None:  # absent: no such topic, or not allowed to read its configuration
                limits[name] = int(value)
        return limits

    def describe_group(self, group_id: str, topics: Sequence[str]) -> tuple[dict[str, Any], dict[str, int]]:
        """The coordinator's DescribeGroups answer for ``group_id``, and each of ``topics``' partition count.

        Raises BrokerUnavailable (try later) or UnsupportedOperation (the broker refuses: do not).
        """
        admin = self._client()
        try:
            group = admin.describe_groups([group_id])[group_id]
            counts = {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(list(topics))}
        except _CANNOT_DESCRIBE as error:
            raise UnsupportedOperation(f"cannot describe group {group_id}: {error}") from None
        except KafkaError as error:
            raise unavailable(error, self._servers) from None
        if group.get("error"):
            raise UnsupportedOperation(f"cannot describe group {group_id}: {group['error']}")
        return group, counts

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except KafkaError as error:
                log.warning("admin close: %s", error)
            self._admin = None
