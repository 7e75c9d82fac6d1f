"""kafka-python configuration: our connection settings (librdkafka / Java names) as keyword arguments.

kafka-python takes snake_case keyword arguments instead of dotted properties.
The security properties are translated by name; any other dotted property
whose underscore form is one of the client's own settings (``fetch.min.bytes``
-> ``fetch_min_bytes``) passes through, converted to the type of that
setting's default. Everything else is refused with a ValueError naming the
variable, so a typo or a librdkafka-only knob never goes unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from adapters.kafka_connection import KafkaConnection
from application.errors import BrokerUnavailable

__all__ = ["KafkaConnection", "api_version_ceiling", "client_config", "translate", "unavailable"]

log = logging.getLogger(__name__)

ROLES: dict[str, Mapping[str, Any]] = {
    "consumer": KafkaConsumer.DEFAULT_CONFIG,
    "producer": KafkaProducer.DEFAULT_CONFIG,
    "admin": KafkaAdminClient.DEFAULT_CONFIG,
}

_SECURITY_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_SASL_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

# Settings that take a Python object (a class, a callable, an SSLContext ...): no string can express them.
_OBJECT_SETTINGS = {
    "key_serializer", "value_serializer", "key_deserializer", "value_deserializer", "partitioner",
    "partition_assignment_strategy", "default_offset_commit_callback", "ssl_context", "selector",
    "socket_options", "metric_reporters", "kafka_client", "sasl_oauth_token_provider", "sasl_kerberos_name",
    "socks5_proxy",
}  # fmt: skip


def _upper_choice(choices: Collection[str]) -> Callable[[str, str], str]:
    def convert(variable: str, value: str) -> str:
        upper = value.strip().upper()
        if upper not in choices:
            raise ValueError(f"{variable}: expected one of {', '.join(sorted(choices))}, got {value!r}")
        return upper

    return convert


def _mechanism(variable: str, value: str) -> str:
    upper = value.strip().upper()
    if upper == "OAUTHBEARER":
        raise ValueError(
            f"{variable}: SASL OAUTHBEARER is not supported by the kafka-python adapter "
            "(it needs a token-provider object); use BROKER_CLIENT=confluent"
        )
    return _upper_choice(_SASL_MECHANISMS)(variable, value)


def _hostname_check(variable: str, value: str) -> bool:
    algorithm = value.strip().lower()
    if algorithm in ("", "none"):
        return False
    if algorithm == "https":
        return True
    raise ValueError(f"{variable}: expected https or none, got {value!r}")


def _text(variable: str, value: str) -> str:
    return value


def _api_version(variable: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.strip().split("."))
    except ValueError:
        raise ValueError(f"{variable}: expected a broker version such as 3.7, got {value!r}") from None


def _acks(variable: str, value: str) -> int | str:
    text = value.strip().lower()
    if text in ("all", "-1"):
        return "all"
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"{variable}: expected all, -1, 0 or 1, got {value!r}")


# Property (librdkafka / Java name) -> (kafka-python argument, conversion).
_RENAMED: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "security.protocol": ("security_protocol", _upper_choice(_SECURITY_PROTOCOLS)),
    "sasl.mechanism": ("sasl_mechanism", _mechanism),
    "sasl.mechanisms": ("sasl_mechanism", _mechanism),
    "sasl.username": ("sasl_plain_username", _text),  # kafka-python uses these for PLAIN and SCRAM alike
    "sasl.password": ("sasl_plain_password", _text),
    "sasl.kerberos.service.name": ("sasl_kerberos_service_name", _text),
    "ssl.ca.location": ("ssl_cafile", _text),
    "ssl.certificate.location": ("ssl_certfile", _text),
    "ssl.key.location": ("ssl_keyfile", _text),
    "ssl.key.password": ("ssl_password", _text),
    "ssl.crl.location": ("ssl_crlfile", _text),
    "ssl.cipher.suites": ("ssl_ciphers", _text),
    "ssl.endpoint.identification.algorithm": ("ssl_check_hostname", _hostname_check),
    "client.id": ("client_id", _text),
    "api.version": ("api_version", _api_version),
    "acks": ("acks", _acks),
}
_UNSUPPORTED_PREFIXES = {
    "sasl.oauthbearer.": "SASL OAUTHBEARER needs a token-provider object in kafka-python; use BROKER_CLIENT=confluent",
}


def variable_name(prop: str) -> str:
    """The environment variable that sets a property: ``sasl.username`` -> ``KAFKA_SASL_USERNAME``."""
    return "KAFKA_" + prop.upper().replace(".", "_").replace("-", "_")


def _convert(variable: str, default: Any, value: str) -> Any:
    """A property's text as the type of the setting's default (bool before int: bool is an int)."""
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[type(default)]
        raise ValueError(f"{variable}: expected {kind}, got {value!r}") from None
    return value


def _unsupported(variable: str, prop: str) -> ValueError:
    return ValueError(f"{variable}: property '{prop}' is not supported by kafka-python")


def translate(connection: KafkaConnection, role: str) -> dict[str, Any]:
    """The user's properties for ``role`` ("consumer", "producer" or "admin") as kafka-python arguments.

    A shared (unprefixed) property that only another client understands, e.g.
    ``linger.ms`` for the consumer, is skipped; one no client understands, or a
    ``role.``-prefixed one this client does not, raises ValueError.
    """
    own = ROLES[role]
    prefixed = {k[len(role) + 1 :] for k in connection.properties if k.startswith(f"{role}.")}
    arguments: dict[str, Any] = {}
    for prop, value in connection.for_role(role).items():
        variable = variable_name(f"{role}.{prop}" if prop in prefixed else prop)
        for prefix, reason in _UNSUPPORTED_PREFIXES.items():
            if prop.startswith(prefix):
                raise ValueError(f"{variable}: property '{prop}' is not supported by kafka-python: {reason}")
        if prop in _RENAMED:
            name, convert = _RENAMED[prop]
            if name in own:
                arguments[name] = convert(variable, value)
            elif prop in prefixed:
                raise _unsupported(variable, prop)
            continue
        name = prop.replace(".", "_").replace("-", "_")
        if name in _OBJECT_SETTINGS or name == "bootstrap_servers":
            raise _unsupported(variable, prop)
        if name in own:
            arguments[name] = _convert(variable, own[name], value)
        elif prop in prefixed or not any(name in defaults for defaults in ROLES.values()):
            raise _unsupported(variable, prop)
        else:
            log.debug("%s: %s applies to another kafka-python client, not the %s", variable, prop, role)
    return arguments


def api_version_ceiling() -> tuple[int, ...]:
    """The newest broker version this kafka-python knows.

    Given as ``api_version`` it stops the client probing the broker while it is
    constructed (a probe that blocks, and fails, when the broker is down);
    every connection still negotiates with ApiVersions and steps down to what
    an older broker supports.
    """
    try:
        from kafka.protocol.broker_version_data import BROKER_API_VERSIONS  # noqa: PLC0415

        return max(BROKER_API_VERSIONS)
    except (ImportError, ValueError):  # a kafka-python that moved it: a version every 2.x/3.x knows
        return (2, 6)


def client_config(
    connection: KafkaConnection, role: str, defaults: Mapping[str, Any], *, reserved: Collection[str] = ()
) -> dict[str, Any]:
    """Keyword arguments for a kafka-python client: our defaults, then the user's properties on top.

    ``reserved`` names the arguments the adapter must control (e.g. auto-commit
    for the consumer); a property setting one of them is refused.
    """
    user = translate(connection, role)
    for name in reserved:
        if name in user:
            raise ValueError(
                f"{variable_name(name.replace('_', '.'))}: property '{name.replace('_', '.')}' "
                "is set by the kafka-python adapter and cannot be overridden"
            )
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in connection.bootstrap_servers.split(",") if s.strip()],
        "api_version": api_version_ceiling(),
        **defaults,
    }
    config.update(user)
    return config


def unavailable(error: BaseException, servers: str) -> BrokerUnavailable:
    return BrokerUnavailable(f"cannot reach Kafka at {servers}: {_describe(error)}")


def _describe(error: BaseException) -> str:
    if isinstance(error, KafkaError):
        return str(error)
    return f"{type(error).__name__}: {error}"
