"""librdkafka configuration: our defaults, then the user's properties on top."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from adapters.kafka_connection import (
    KafkaConnection,
    authentication_failed,
    check_tls_files,
    closes_before_answering,
    principal,
    tls_failed,
)
from application.errors import BrokerUnavailable, FatalBrokerError, InvalidConfiguration, NotAuthorized, PipelineError

__all__ = [
    "OWNERSHIP_LOST",
    "ErrorReporter",
    "client_config",
    "failures",
    "is_not_authorized",
    "is_unreachable",
    "reporting_config",
    "translate",
]

log = logging.getLogger(__name__)

_UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT}


class LibrdkafkaLog:
    """librdkafka's log callback, tamed: it retries a lost connection every second and says so each time.

    ErrorReporter already reports an unreachable cluster once, so connection
    failures (facility FAIL) go to DEBUG, and any other line is repeated at most
    once per interval.
    """

    def __init__(self, role: str, interval_s: float = 60.0, reporter: ErrorReporter | None = None) -> None:
        self._logger = logging.getLogger(f"confluent_kafka.{role}")
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._reporter = reporter

    def log(self, level: int, message: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        if facility == "FAIL":
            self._logger.debug(message, *args)
            if self._reporter is not None:
                self._reporter.connection_failed(message % args if args else message)
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
    """Our defaults, then the user's properties; TLS files are read first, so a bad one is a setting's error."""
    check_tls_files(connection.for_role(role))
    reporter = defaults.get("error_cb")
    config: dict[str, Any] = {
        "bootstrap.servers": connection.bootstrap_servers,
        # librdkafka's own lines join our log stream, without the flood; its connection failures inform the reporter.
        "logger": LibrdkafkaLog(role, reporter=reporter if isinstance(reporter, ErrorReporter) else None),
        **defaults,
    }
    config.update(connection.for_role(role))
    return config


def reporting_config(
    connection: KafkaConnection, who: str, defaults: dict[str, Any]
) -> tuple[ErrorReporter, dict[str, Any]]:
    """An ErrorReporter for ``who`` (a role, or "transactional producer") and the client configuration feeding it."""
    errors = ErrorReporter(who, connection)
    return errors, client_config(connection, _ROLE_OF[who], {"error_cb": errors, **defaults})


def failures(futures: Mapping[str, Future[Any]]) -> Iterator[tuple[str, KafkaError]]:
    """Each request of an AdminClient call that failed, by its key, with librdkafka's error; the rest succeeded."""
    for key, future in futures.items():
        try:
            future.result()
        except KafkaException as exception:
            yield key, exception.args[0]


def is_unreachable(error: KafkaError) -> bool:
    return error.code() in _UNREACHABLE


class ErrorReporter:
    """librdkafka's error callback: remembers why the cluster cannot be used; logs a state change once.

    A refused login (_AUTHENTICATION) or TLS handshake (_SSL) is followed by "all brokers down"
    and by transport failures from every call; ``problem`` keeps the real cause until the cluster
    answers again, and the caller reports it (so it is not logged here, where it would repeat).
    """

    def __init__(self, role: str, connection: KafkaConnection | None = None) -> None:
        self._role = role
        self._properties = connection.for_role(_ROLE_OF.get(role, "producer")) if connection else {}
        self._servers = connection.bootstrap_servers if connection else ""
        self.unreachable = False
        self.last_error = ""
        self.fatal: KafkaError | None = None
        self.problem: BrokerUnavailable | None = None
        self.closed_at_once = False  # the broker closed connections before its first reply

    def __call__(self, error: KafkaError) -> None:
        self.last_error = error.str()
        code = error.code()
        if code in _AUTHENTICATION:
            detail = _detail(error.str())
            self.problem = authentication_failed(self._properties, "" if "invalid credentials" in detail else detail)
            self.unreachable = True
            log.debug("%s: %s", self._role, error.str())
        elif code == KafkaError._SSL:
            self.problem = tls_failed(self._properties, self._servers, _detail(error.str()))
            self.unreachable = True
            log.debug("%s: %s", self._role, error.str())
        elif error.fatal():
            self.fatal = error
            log.error("%s: fatal Kafka error: %s", self._role, error.str())
        elif is_unreachable(error):
            if not self.unreachable and self.problem is None:
                log.warning("%s: cannot reach the Kafka cluster: %s", self._role, error.str())
            self.unreachable = True
        else:
            log.warning("%s: Kafka error: %s", self._role, error.str())

    def connection_failed(self, text: str) -> None:
        """A FAIL log line: a broker that closes the connection before answering may expect TLS or SASL."""
        if "closed by peer" in text and "APIVERSION_QUERY" in text:
            self.closed_at_once = True
        elif "Connection refused" in text or "resolve" in text.lower():
            self.closed_at_once = False

    def reachable(self) -> None:
        self.closed_at_once = False
        if self.unreachable and self.problem is None:
            log.info("%s: Kafka cluster reachable again", self._role)
        self.unreachable = False
        self.problem = None

    def known_cause(self) -> BrokerUnavailable | None:
        """The cause the callbacks told (a refused login, TLS, a listener expecting TLS or SASL), if any."""
        if self.problem is not None:  # a fresh instance: re-raising one would grow its traceback forever
            return type(self.problem)(*self.problem.args)
        if self.closed_at_once and self._properties.get("security.protocol", "PLAINTEXT").upper() in ("PLAINTEXT", ""):
            return closes_before_answering(self._servers)
        return None

    def unavailable(self, error: KafkaException | KafkaError | None = None) -> BrokerUnavailable:
        """What a failed call means: the remembered cause if there is one, else an unreachable cluster."""
        known = self.known_cause()
        if known is not None:
            return known
        if error is None:
            return BrokerUnavailable(self.last_error or f"cannot reach Kafka at {self._servers}")
        return unavailable(error, self._servers)


# The member no longer owns its partitions (the group moved on without it): the next owner re-reads
# from the last commit, and retrying cannot help until this member polls and rejoins.
OWNERSHIP_LOST = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
_ROLE_OF = {"consumer": "consumer", "producer": "producer", "transactional producer": "producer", "admin": "admin"}
_AUTHENTICATION = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
_NOT_AUTHORIZED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional-id",
}


def _detail(text: str) -> str:
    """librdkafka's message without the broker prefix and the timing suffix."""
    text = re.sub(r"\s*\(after \d+ms in state \w+\)$", "", text)
    text = text.split("/bootstrap: ", 1)[-1]
    for prefix in ("SASL authentication error: ", "SSL handshake failed: "):
        text = text.removeprefix(prefix)
    return re.sub(r"^error:[0-9A-F]+:SSL routines::", "", text)


def is_not_authorized(error: KafkaError) -> bool:
    return error.code() in _NOT_AUTHORIZED


def translate(
    error: KafkaException | KafkaError,
    reporter: ErrorReporter,
    *,
    operation: str,
    resources: dict[str, str],
    connection: KafkaConnection,
) -> PipelineError:
    """Any librdkafka error as the port's error: the one place confluent adapters map codes to classes.

    ``operation`` and ``resources`` (resource type -> name) say what was attempted, for NotAuthorized.
    """
    failure: KafkaError = error.args[0] if isinstance(error, KafkaException) else error
    code = failure.code()
    if code in _NOT_AUTHORIZED:
        kind = _NOT_AUTHORIZED[code]
        name = "kafka-cluster" if kind == "cluster" else resources.get(kind, "?")
        action = {"cluster": "IdempotentWrite", "group": "Read"}.get(kind, operation)
        return NotAuthorized(action, kind, name, principal(connection.for_role("consumer")))
    if code in _AUTHENTICATION:
        return authentication_failed(connection.properties, _detail(failure.str()))
    if code == KafkaError._SSL:
        return tls_failed(connection.properties, connection.bootstrap_servers, _detail(failure.str()))
    if code == KafkaError._INVALID_ARG:
        return InvalidConfiguration(failure.str())
    if failure.fatal():
        return FatalBrokerError(failure.str())
    return reporter.unavailable(error)


def unavailable(error: KafkaException | KafkaError, servers: str) -> BrokerUnavailable:
    detail = error.args[0].str() if isinstance(error, KafkaException) and error.args else str(error)
    return BrokerUnavailable(f"cannot reach Kafka at {servers}: {detail}")
