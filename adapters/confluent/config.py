"""librdkafka configuration: our defaults, then the user's properties on top."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from adapters.kafka_connection import KafkaConnection
from application.errors import BrokerUnavailable

__all__ = ["ErrorReporter", "KafkaConnection", "client_config", "is_unreachable"]

log = logging.getLogger(__name__)

_UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT}


class LibrdkafkaLog:
    """librdkafka's log callback, tamed: it retries a lost connection every second and says so each time.

    ErrorReporter already reports an unreachable cluster once, so connection
    failures (facility FAIL) go to DEBUG, and any other line is repeated at most
    once per interval.
    """

    def __init__(self, role: str, interval_s: float = 60.0) -> None:
        self._logger = logging.getLogger(f"confluent_kafka.{role}")
        self._interval = interval_s
        self._last: dict[str, float] = {}

    def log(self, level: int, message: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        if facility == "FAIL":
            self._logger.debug(message, *args)
            return
        text = message % args if args else message
        key = facility + re.sub(r"[0-9]+", "#", text.split("]: ", 1)[-1])[:120]
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._logger.debug(text)
            return
        self._last[key] = now
        self._logger.log(level, text)


def client_config(connection: KafkaConnection, role: str, defaults: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": connection.bootstrap_servers,
        "logger": LibrdkafkaLog(role),  # librdkafka's own lines join our log stream, without the flood
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
