"""librdkafka configuration: our defaults, then the user's properties on top."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from adapters.kafka_connection import KafkaConnection
from application.errors import BrokerUnavailable

__all__ = ["ErrorReporter", "KafkaConnection", "client_config", "is_unreachable"]

log = logging.getLogger(__name__)

_UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT}


def client_config(connection: KafkaConnection, role: str, defaults: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": connection.bootstrap_servers,
        "logger": logging.getLogger(f"confluent_kafka.{role}"),  # librdkafka's own lines join our log stream
        **defaults,
    }
    config.update(connection.for_role(role))
    return config


def is_unreachable(error: KafkaError) -> bool:
    return error.code() in _UNREACHABLE


class ErrorReporter:
    """librdkafka's error callback: logs a state change once, not every reconnect attempt."""

    def __init__(self, role: str) -> None:
        self._role = role
        self.unreachable = False
        self.last_error = ""
        self.fatal: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        self.last_error = error.str()
        if error.fatal():
            self.fatal = error
            log.error("%s: fatal Kafka error: %s", self._role, error.str())
        elif is_unreachable(error):
            if not self.unreachable:
                log.warning("%s: cannot reach the Kafka cluster: %s", self._role, error.str())
            self.unreachable = True
        else:
            log.warning("%s: Kafka error: %s", self._role, error.str())

    def reachable(self) -> None:
        if self.unreachable:
            log.info("%s: Kafka cluster reachable again", self._role)
        self.unreachable = False


def unavailable(error: KafkaException | KafkaError, servers: str) -> BrokerUnavailable:
    detail = error.args[0].str() if isinstance(error, KafkaException) and error.args else str(error)
    return BrokerUnavailable(f"cannot reach Kafka at {servers}: {detail}")
