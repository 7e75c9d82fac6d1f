"""kafka-python configuration: our connection settings (librdkafka / Java names) as keyword arguments.

kafka-python takes snake_case keyword arguments instead of dotted properties.
The security properties are translated by name; any other dotted property
whose underscore form is one of the client's own settings (``fetch.min.bytes``
-> ``fetch_min_bytes``) passes through, converted to the type of that
setting's default. Everything else is refused with InvalidConfiguration (a
ValueError) naming the variable, so a typo or a librdkafka-only knob never goes
unnoticed.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from adapters.kafka_connection import (
    KafkaConnection,
    authentication_failed,
    check_tls_files,
    closes_before_answering,
    principal,
    tls_failed,
    variable_name,
)
from application.errors import BrokerUnavailable, FatalBrokerError, InvalidConfiguration, NotAuthorized, PipelineError
from application.parsing import boolean, choice

__all__ = [
    "OWNERSHIP_LOST",
    "api_version_ceiling",
    "client_config",
    "connection_problem",
    "connection_recovered",
    "quiet_repeated_client_logs",
    "translate",
    "translate_error",
    "unavailable",
    "variable_name",
]

log = logging.getLogger(__name__)

ROLES: dict[str, Mapping[str, Any]] = {
    "consumer": KafkaConsumer.DEFAULT_CONFIG,
    "producer": KafkaProducer.DEFAULT_CONFIG,
    "admin": KafkaAdminClient.DEFAULT_CONFIG,
}

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
_OAUTH = "SASL OAUTHBEARER needs a token-provider object in kafka-python; use BROKER_CLIENT=confluent"

# Settings that take a Python object (a class, a callable, an SSLContext ...): no string can express them.
_OBJECT_SETTINGS = {
    "key_serializer", "value_serializer", "key_deserializer", "value_deserializer", "partitioner",
    "partition_assignment_strategy", "default_offset_commit_callback", "ssl_context", "selector",
    "socket_options", "metric_reporters", "kafka_client", "sasl_oauth_token_provider", "sasl_kerberos_name",
    "socks5_proxy", "bootstrap_servers",
}  # fmt: skip


def _choice(choices: Collection[str]) -> Callable[[str, str], str]:
    parse = choice(*choices, normalise=str.upper)

    def convert(variable: str, value: str) -> str:
        try:
            return parse(value)
        except ValueError as error:
            raise InvalidConfiguration(f"{variable}: {error}") from None

    return convert


def _mechanism(variable: str, value: str) -> str:
    if value.strip().upper() == "OAUTHBEARER":
        raise InvalidConfiguration(f"{variable}: {_OAUTH}")
    return _choice(_SASL_MECHANISMS)(variable, value)


def _hostname_check(variable: str, value: str) -> bool:
    algorithm = value.strip().lower()
    if algorithm in ("", "none"):
        return False
    if algorithm == "https":
        return True
    raise InvalidConfiguration(f"{variable}: expected https or none, got {value!r}")


def _text(variable: str, value: str) -> str:
    return value


def _api_version(variable: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.strip().split("."))
    except ValueError:
        raise InvalidConfiguration(f"{variable}: expected a broker version such as 3.7, got {value!r}") from None


def _acks(variable: str, value: str) -> int | str:
    text = value.strip().lower()
    if text in ("all", "-1"):
        return "all"
    if text in ("0", "1"):
        return int(text)
    raise InvalidConfiguration(f"{variable}: expected all, -1, 0 or 1, got {value!r}")


# Property (librdkafka / Java name) -> kafka-python argument, for those whose text is taken as it is.
# (sasl.username and sasl.password: kafka-python uses these for PLAIN and SCRAM alike.)
_RENAMED_TEXT = {
    "sasl.username": "sasl_plain_username", "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name", "client.id": "client_id",
    "ssl.ca.location": "ssl_cafile", "ssl.certificate.location": "ssl_certfile", "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password", "ssl.crl.location": "ssl_crlfile", "ssl.cipher.suites": "ssl_ciphers",
}  # fmt: skip
# Property -> (kafka-python argument, conversion).
_RENAMED: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "security.protocol": ("security_protocol", _choice(_SECURITY_PROTOCOLS)),
    "sasl.mechanism": ("sasl_mechanism", _mechanism),
    "sasl.mechanisms": ("sasl_mechanism", _mechanism),
    "ssl.endpoint.identification.algorithm": ("ssl_check_hostname", _hostname_check),
    "api.version": ("api_version", _api_version),
    "acks": ("acks", _acks),
    **{prop: (argument, _text) for prop, argument in _RENAMED_TEXT.items()},
}


class _Argument(NamedTuple):
    value: Any
    variable: str
    prop: str


def _convert(variable: str, default: Any, value: str) -> Any:
    """A property's text as the type of the setting's default (bool before int: a bool is an int)."""
    text = value.strip()
    try:
        if isinstance(default, bool):
            return boolean(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = (
            "true or false" if isinstance(default, bool) else "an integer" if isinstance(default, int) else "a number"
        )
        raise InvalidConfiguration(f"{variable}: expected {kind}, got {value!r}") from None
    return value


def _unsupported(variable: str, prop: str, reason: str = "") -> InvalidConfiguration:
    return InvalidConfiguration(
        f"{variable}: property '{prop}' is not supported by kafka-python" + (f" ({reason})" if reason else "")
    )


def _arguments(connection: KafkaConnection, role: str) -> dict[str, _Argument]:
    own = ROLES[role]
    prefixed = {k[len(role) + 1 :] for k in connection.properties if k.startswith(f"{role}.")}
    arguments: dict[str, _Argument] = {}
    for prop, value in connection.for_role(role).items():
        explicit = prop in prefixed  # given as role.prop: meant for this client only
        variable = variable_name(f"{role}.{prop}" if explicit else prop)
        if prop.startswith("sasl.oauthbearer."):
            raise _unsupported(variable, prop, _OAUTH)
        if prop in _RENAMED:
            name, convert = _RENAMED[prop]
            if name in own:
                arguments[name] = _Argument(convert(variable, value), variable, prop)
            elif explicit:
                raise _unsupported(variable, prop, f"the {role} has no such setting")
            continue
        name = prop.replace(".", "_").replace("-", "_")
        if name in _OBJECT_SETTINGS:
            raise _unsupported(variable, prop, "it takes a Python object")
        if name in own:
            arguments[name] = _Argument(_convert(variable, own[name], value), variable, prop)
        elif explicit:
            raise _unsupported(variable, prop, f"the {role} has no such setting")
        elif not any(name in defaults for defaults in ROLES.values()):
            raise _unsupported(variable, prop)
        else:
            log.debug("%s (%s) is for another kafka-python client, not the %s", variable, prop, role)
    return arguments


def translate(connection: KafkaConnection, role: str) -> dict[str, Any]:
    """The user's properties for ``role`` ("consumer", "producer" or "admin") as kafka-python arguments.

    A shared (unprefixed) property that only another client understands, e.g.
    ``linger.ms`` for the consumer, is skipped; one that no kafka-python client
    understands, or a ``role.``-prefixed one this client does not, is refused.
    """
    return {name: argument.value for name, argument in _arguments(connection, role).items()}


def api_version_ceiling() -> tuple[int, ...]:
    """The newest broker version this kafka-python knows, passed as ``api_version``.

    Without it each client probes the broker while it is constructed, which
    blocks (and fails) when the broker is down. With it, construction does no
    I/O, and every connection still negotiates with ApiVersions, stepping down
    to what an older broker supports.
    """
    try:
        from kafka.protocol.broker_version_data import BROKER_API_VERSIONS  # noqa: PLC0415

        return max(BROKER_API_VERSIONS)
    except (ImportError, ValueError, TypeError):  # moved in some other release: a version every 2.x/3.x knows
        return (2, 6)


def client_config(
    connection: KafkaConnection, role: str, defaults: Mapping[str, Any], *, reserved: Collection[str] = ()
) -> dict[str, Any]:
    """Keyword arguments for a kafka-python client: our defaults, then the user's properties on top.

    ``reserved`` names arguments the adapter must control (auto-commit for the
    consumer, for instance); a property that sets one is refused.
    """
    user = _arguments(connection, role)
    check_tls_files(connection.for_role(role))
    for name in reserved:
        if name in user:
            raise InvalidConfiguration(
                f"{user[name].variable}: property '{user[name].prop}' is set by the kafka-python adapter"
            )
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in connection.bootstrap_servers.split(",") if s.strip()],
        "api_version": api_version_ceiling(),
        # librdkafka's ceiling: kafka-python's own (30 s) makes recovery after an outage needlessly slow.
        "reconnect_backoff_max_ms": 10_000,
        **defaults,
    }
    config.update({name: argument.value for name, argument in user.items()})
    return config


def unavailable(error: BaseException, servers: str, connection: KafkaConnection | None = None) -> BrokerUnavailable:
    """An unreachable cluster, or the refused login or TLS handshake the client logged meanwhile."""
    if connection is not None:
        problem = connection_problem(connection)
        if problem is not None:
            return problem
    detail = str(error) if isinstance(error, KafkaError) else f"{type(error).__name__}: {error}"
    return BrokerUnavailable(f"cannot reach Kafka at {servers}: {detail}")


# The member no longer owns its partitions (the group moved on without it): the next owner re-reads
# from the last commit, and retrying cannot help until this member polls and rejoins.
OWNERSHIP_LOST: tuple[type[KafkaError], ...] = (
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.FencedInstanceIdError,
)


_NOT_AUTHORIZED: dict[type[KafkaError], str] = {
    kafka_errors.TopicAuthorizationFailedError: "topic",
    kafka_errors.GroupAuthorizationFailedError: "group",
    kafka_errors.ClusterAuthorizationFailedError: "cluster",
    kafka_errors.TransactionalIdAuthorizationFailedError: "transactional-id",
}


def translate_error(
    error: BaseException, connection: KafkaConnection, *, operation: str, resources: Mapping[str, str]
) -> PipelineError:
    """Any kafka-python exception as the port's error: the one place its classes are mapped.

    ``operation`` and ``resources`` (resource type -> name) say what was attempted, for NotAuthorized.
    """
    for kind, resource in _NOT_AUTHORIZED.items():
        if isinstance(error, kind):
            name = "kafka-cluster" if resource == "cluster" else resources.get(resource, "")
            if resource == "topic" and error.args and isinstance(error.args[0], (set, frozenset, list)):
                name = ",".join(sorted(map(str, error.args[0]))) or name
            action = {"cluster": "IdempotentWrite", "group": "Read"}.get(resource, operation)
            return NotAuthorized(action, resource, name or "?", principal(connection.properties))
    if isinstance(error, kafka_errors.SaslAuthenticationFailedError):
        return authentication_failed(connection.properties, str(error))
    if isinstance(error, ssl.SSLError):
        return tls_failed(connection.properties, connection.bootstrap_servers, str(error))
    if isinstance(error, (kafka_errors.KafkaConfigurationError, ValueError, TypeError)):
        return InvalidConfiguration(f"invalid client configuration: {error}")
    unreachable = (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError)
    if isinstance(error, unreachable) or (isinstance(error, KafkaError) and error.retriable):
        return unavailable(error, connection.bootstrap_servers, connection)
    return FatalBrokerError(f"{type(error).__name__}: {error}")


class _Diagnosis:
    """What kafka-python's connection errors said lately.

    It logs a refused login or TLS handshake, and its calls then fail only with timeouts. Shared by
    every client in the process (they share loggers). kafka-python 3.0.12 often does not see the
    broker's SASL error at all, only the connection the broker then closes ("socket disconnected").
    Only bootstrap connections closed before they were ready count: a broker restarting drops
    working connections, then refuses new ones (which clears the count). In plain text, or before
    the broker answered anything (when the API version is probed): a listener that expects TLS or
    SASL; after it answered, over SASL or with a client certificate: the broker refused the login.
    """

    _AUTH = re.compile(r"SaslAuthenticationFailedError|AuthenticationFailedError|Authentication failed")
    _TLS = re.compile(r"\[SSL[:\]]|SSLError|CERTIFICATE_VERIFY_FAILED|Handshake failed")
    _DROPPED = "Connection lost: KafkaConnectionError: socket disconnected"
    _BOOTSTRAP_DROPPED = re.compile(r"Bootstrap connection to \S+ failed: KafkaConnectionError: socket disconnected")
    _UNANSWERED = "broker_version=unknown"  # the connection was closed before ApiVersions was answered
    _DROPS_TO_BLAME_LOGIN = 2
    # What only an unreachable cluster gives (a slow one, e.g. timeouts under load, says nothing either way).
    _DOWN = re.compile(
        r"ECONNREFUSED|[Rr]efused|ECONNRESET|reset by peer|EHOSTUNREACH|ENETUNREACH|getaddrinfo|resolve|DNS"
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kind = ""
        self.detail = ""
        self._drops = 0
        self._unanswered = False

    def saw(self, text: str) -> bool:
        """Remember a connection failure's cause; True if the line was one (the caller then folds it)."""
        if self._AUTH.search(text):
            kind = "auth"
            detail = text.rsplit("Error: ", 1)[-1]
            if "invalid credentials" in detail:
                detail = ""  # the line says it already
        elif self._TLS.search(text):
            kind = "tls"
            detail = text.split("Handshake failed: ", 1)[-1] if "Handshake failed: " in text else text
            detail = re.sub(r"^.*?Connection (?:lost|failed): ", "", detail)
            detail = re.sub(r"\s*\(backoff [\d.]+ secs\)$", "", detail)
            detail = re.sub(r"^\[SSL: [A-Z_]+\] |\s*\(_ssl\.c:\d+\)$", "", detail)
        elif self._DROPPED in text:
            if self._UNANSWERED in text:
                with self._lock:
                    self._unanswered = True
            return True
        elif self._BOOTSTRAP_DROPPED.search(text):
            with self._lock:
                self._drops += 1
                if self._drops >= self._DROPS_TO_BLAME_LOGIN and not self.kind:
                    self.kind = "dropped"
            return True
        else:
            if ("Connection lost" in text or "Connection failed" in text) and self._DOWN.search(text):
                with self._lock:  # refused, reset, unresolvable: the cluster is unreachable, not refusing us
                    self._drops, self._unanswered = 0, False
                    if self.kind == "dropped":
                        self.kind = ""
            return False
        with self._lock:
            self.kind, self.detail = kind, detail.strip()
        return True

    def clear(self) -> None:
        with self._lock:
            self.kind, self.detail, self._drops, self._unanswered = "", "", 0, False

    def problem(self, connection: KafkaConnection) -> BrokerUnavailable | None:
        with self._lock:
            if not self.kind:  # remembered until a connection works again (connection_recovered)
                return None
            kind, detail, unanswered = self.kind, self.detail, self._unanswered
        protocol = connection.properties.get("security.protocol", "").strip().upper()
        if kind == "dropped" and (unanswered or protocol in ("", "PLAINTEXT")):
            return closes_before_answering(connection.bootstrap_servers)
        if kind == "dropped":
            if protocol.startswith("SASL"):
                return authentication_failed(connection.properties, "the broker closed the connection at login")
            if protocol == "SSL" and connection.properties.get("ssl.certificate.location"):
                detail = "the broker closed the connection: is the client certificate trusted?"
                return tls_failed(connection.properties, connection.bootstrap_servers, detail)
            return None
        if kind == "auth":
            return authentication_failed(connection.properties, detail)
        return tls_failed(connection.properties, connection.bootstrap_servers, detail)


_DIAGNOSIS = _Diagnosis()


def connection_problem(connection: KafkaConnection) -> BrokerUnavailable | None:
    """The refused login or TLS handshake kafka-python logged in the last minute, if any."""
    return _DIAGNOSIS.problem(connection)


def connection_recovered() -> None:
    _DIAGNOSIS.clear()


class _RepeatFilter(logging.Filter):
    """Lets one warning or error through per minute per kind of message; counts what it held back.

    kafka-python logs every failed reconnect (several lines each, at ERROR);
    while a cluster is down that is a line every few seconds saying the same.
    """

    _NUMBERS = re.compile(r"\d+(?:\.\d+)?")

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self._window_s = window_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the library's problem, not ours to hide
            return True
        folded = record.name.startswith("kafka.net.") or "AuthorizationFailed" in text or "is not authorized" in text
        if _DIAGNOSIS.saw(text) or folded:
            # Connection-level chatter (every reconnect, several lines each) and refusals: the adapter
            # reports the cause itself, once (then a reminder a minute), so these stay at DEBUG.
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        key = (record.name, record.levelno, self._NUMBERS.sub("#", text))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (-self._window_s, 0))
            if now - last < self._window_s:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # messages carrying ids could grow this forever
                self._seen = {key: (now, 0)}
        if held:
            record.msg, record.args = f"{text} ({held} similar message(s) not shown since the last)", None
        return True


_REPEAT_FILTER = _RepeatFilter()


def quiet_repeated_client_logs() -> None:
    """Install the repeat filter on kafka-python's loggers (they exist once its modules are imported)."""
    for name, candidate in list(logging.Logger.manager.loggerDict.items()):
        is_kafka = name == "kafka" or name.startswith("kafka.")
        if is_kafka and isinstance(candidate, logging.Logger) and _REPEAT_FILTER not in candidate.filters:
            candidate.addFilter(_REPEAT_FILTER)


# kafka-python's loggers exist once it is imported: fold their repeats from the very first client on
# (an admin client bootstrapping at start logs several lines per failed reconnect before any other call).
quiet_repeated_client_logs()
