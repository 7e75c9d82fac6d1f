"""Configuration from defaults, an optional ``.env`` file, the environment and CLI overrides, in that order.

Every setting is declared once in ``SETTINGS`` with its accepted names (the old
Go consumer's names included), parser, default and help; the loader, the error
messages and the README's configuration table all come from that one list.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from application.parsing import boolean as _boolean
from application.parsing import choice as _choice
from application.retry import RetryPolicy
from application.settings import PipelineSettings
from domain.policies import REQUIRED_FIELDS, RuleSettings
from domain.versions import AppVersion

BROKER_CLIENTS = ("memory", "confluent", "kafka-python")
SECRET_MARKERS = ("password", "secret", "key", "token", "credentials")
GUARANTEES = ("at-least-once", "exactly-once")


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""


def _integer(minimum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _number(minimum: float = 0.0) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ValueError(f"must be a finite number of at least {minimum:g}, got {text.strip()}")
        return value

    return parse


def _port(text: str) -> int:
    value = _integer(0)(text)
    if value > 65535:
        raise ValueError(f"must be a TCP port between 0 and 65535, got {value}")
    return value


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*")
_DURATION_UNITS_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _duration_ms(text: str) -> int:
    """Milliseconds from ``6000``, ``6000ms``, ``6s`` or ``1m`` (the Go consumer wrote durations)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected milliseconds or a duration like 10s, got {text!r}")
    return int(float(match.group(1)) * _DURATION_UNITS_MS[match.group(2) or "ms"])


def _version_or_off(text: str) -> AppVersion | None:
    if text.strip().lower() in {"", "off", "none"}:
        return None
    return AppVersion.parse(text.strip())


def _field_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    names: tuple[str, ...]
    parse: Callable[[str], Any]
    default: str
    help: str

    @property
    def name(self) -> str:
        return self.names[0]


SETTINGS: tuple[Setting, ...] = (
    Setting("broker_client", ("BROKER_CLIENT",), _choice(*BROKER_CLIENTS), "confluent",
            "Broker adapter: confluent (confluent-kafka), kafka-python, or memory (embedded, for demos)"),
    Setting("bootstrap_servers", ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BROKER_URL"), _text, "localhost:9092",
            "Comma-separated Kafka bootstrap servers"),
    Setting("input_topic", ("INPUT_TOPIC", "KAFKA_INPUT_TOPIC"), _text, "user-login", "Topic to consume"),
    Setting("output_topic", ("OUTPUT_TOPIC", "KAFKA_OUTPUT_TOPIC"), _text, "processed-user-login",
            "Topic for processed events"),
    Setting("dlq_topic", ("DLQ_TOPIC", "KAFKA_DLQ_TOPIC"), _text, "user-login-dlq",
            "Dead-letter topic for rejected records"),
    Setting("consumer_group", ("CONSUMER_GROUP", "KAFKA_CONSUMER_GROUP"), _text, "user-login-processor",
            "Consumer group id"),
    Setting("auto_offset_reset", ("AUTO_OFFSET_RESET",), _choice("earliest", "latest"), "earliest",
            "Where a group with no committed offset starts"),
    Setting("session_timeout_ms", ("SESSION_TIMEOUT", "SESSION_TIMEOUT_MS"), _duration_ms, "45000",
            "Group session timeout: milliseconds or a duration such as 45s"),
    Setting("enable_auto_commit", ("ENABLE_AUTO_COMMIT",), _boolean, "false",
            "Accepted for compatibility; auto-commit is always off (offsets are committed after delivery)"),
    Setting("processing_guarantee", ("PROCESSING_GUARANTEE",), _choice(*GUARANTEES), "at-least-once",
            "at-least-once, or exactly-once with Kafka transactions"),
    Setting("transaction_size", ("TRANSACTION_SIZE",), _integer(1), "5000",
            "Records per transaction in exactly-once mode"),
    Setting("transactional_id", ("TRANSACTIONAL_ID",), str.strip, "",
            "Stable per-instance transactional id (default: group.input-topic.hostname.worker)"),
    Setting("transaction_timeout_ms", ("TRANSACTION_TIMEOUT_MS",), _integer(1000), "60000",
            "How long the broker waits before aborting a transaction left open by a crashed instance; "
            "a record's delivery timeout is never longer (with kafka-python, under 30 s the request timeout "
            "shortens with it)"),
    Setting("retry_limit", ("RETRY_LIMIT", "KAFKA_RETRY_LIMIT"), _integer(0), "5",
            "Publish retries before a record is dead-lettered as publish_failed"),
    Setting("retry_backoff_ms", ("RETRY_BACKOFF_MS",), _integer(1), "100",
            "First retry backoff; doubles per attempt, with full jitter"),
    Setting("retry_max_backoff_ms", ("RETRY_MAX_BACKOFF_MS",), _integer(1), "10000", "Ceiling of the retry backoff"),
    Setting("batch_size", ("BATCH_SIZE",), _integer(1), "500", "Records taken per poll"),
    Setting("poll_timeout_ms", ("POLL_TIMEOUT_MS",), _integer(0), "500", "Longest wait for new records per poll"),
    Setting("commit_interval_ms", ("COMMIT_INTERVAL_MS",), _integer(0), "1000",
            "How often acknowledged offsets are committed"),
    Setting("max_in_flight", ("MAX_IN_FLIGHT",), _integer(1), "20000",
            "Records consumed but not yet acknowledged before consumption pauses"),
    Setting("max_records_per_second", ("MAX_RECORDS_PER_SECOND",), _number(0), "0",
            "Smooth ceiling on records consumed per second per process; 0 means no limit"),
    Setting("shutdown_timeout_s", ("SHUTDOWN_TIMEOUT",), _number(0), "30",
            "Seconds allowed to finish in-flight records on SIGTERM"),
    Setting("broker_wait_timeout_s", ("BROKER_WAIT_TIMEOUT",), _number(1), "60",
            "Seconds a one-shot command (topics ensure, produce) waits for a cluster it cannot use (unreachable, "
            "refusing the login, acknowledging nothing) before it gives up with exit 1"),
    Setting("topic_partitions", ("TOPIC_PARTITIONS",), _integer(1), "4", "Partitions for topics the service creates"),
    Setting("topic_replication_factor", ("TOPIC_REPLICATION_FACTOR",), _integer(1), "1",
            "Replication factor for topics the service creates"),
    Setting("min_app_version", ("MIN_APP_VERSION",), _version_or_off, "2.0.0",
            "Oldest accepted app_version; off disables the age check"),
    Setting("required_fields", ("REQUIRED_FIELDS",), _field_list, ",".join(REQUIRED_FIELDS),
            "Fields that must be present and non-blank"),
    Setting("check_field_types", ("CHECK_FIELD_TYPES",), _boolean, "true", "Reject non-string user/device fields"),
    Setting("check_app_version", ("CHECK_APP_VERSION",), _boolean, "true", "Validate app_version format and age"),
    Setting("check_ip", ("CHECK_IP",), _boolean, "true", "Validate ip"),
    Setting("require_public_ip", ("REQUIRE_PUBLIC_IP",), _boolean, "true",
            "Reject private, loopback, link-local and reserved addresses"),
    Setting("check_timestamp", ("CHECK_TIMESTAMP",), _boolean, "true", "Validate timestamp"),
    Setting("json_codec", ("JSON_CODEC",), _choice("orjson", "stdlib"), "orjson",
            "JSON parser for the hot path (both give identical results)"),
    Setting("log_level", ("LOG_LEVEL", "LEVEL"), _choice("trace", "debug", "info", "warning", "error", "critical"),
            "info", "Log level"),
    Setting("log_format", ("LOG_FORMAT",), _choice("text", "json"), "text", "text for people, json for collectors"),
    Setting("metrics_port", ("METRICS_PORT",), _port, "9108",
            "Port for /metrics, /healthz and /readyz; 0 disables"),
    Setting("workers", ("WORKERS",), _integer(1), "1", "Consumer processes in this instance (pipeline run)"),
)  # fmt: skip

_BY_KEY = {setting.key: setting for setting in SETTINGS}
_KNOWN_NAMES = {name for setting in SETTINGS for name in setting.names}
# KAFKA_* variables that are not settings become client properties; these prefixes belong to tooling.
_NOT_CLIENT_PROPERTIES = (
    "KAFKA_LOCAL_",
    "KAFKA_HOME",
    "KAFKA_OPTS",
    "KAFKA_HEAP_OPTS",
    "KAFKA_JVM_",
    "KAFKA_LOG4J_",
    "KAFKA_GC_",
    "KAFKA_JMX_",
    "KAFKA_DEBUG",
    # Kubernetes injects these for a Service named "kafka" (service links): addresses, not client properties.
    "KAFKA_PORT",
    "KAFKA_SERVICE_",
)


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that never prints: ``str``, ``repr`` and f-strings show ``***``; ``reveal()`` is the one way in."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


def is_secret_property(name: str) -> bool:
    """Client properties whose values are credentials: ``sasl.password``, ``ssl.key.password``, tokens, ..."""
    return any(marker in name for marker in SECRET_MARKERS)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of ``SETTINGS`` as a typed, read-only field (same key, the type its parser returns).

    A unit test checks that the fields and the table agree; :func:`load_settings` builds it.
    """

    broker_client: str
    bootstrap_servers: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    consumer_group: str
    auto_offset_reset: str
    session_timeout_ms: int
    enable_auto_commit: bool
    processing_guarantee: str
    transaction_size: int
    transactional_id: str
    transaction_timeout_ms: int
    retry_limit: int
    retry_backoff_ms: int
    retry_max_backoff_ms: int
    batch_size: int
    poll_timeout_ms: int
    commit_interval_ms: int
    max_in_flight: int
    max_records_per_second: float
    shutdown_timeout_s: float
    broker_wait_timeout_s: float
    topic_partitions: int
    topic_replication_factor: int
    min_app_version: AppVersion | None
    required_fields: tuple[str, ...]
    check_field_types: bool
    check_app_version: bool
    check_ip: bool
    require_public_ip: bool
    check_timestamp: bool
    json_codec: str
    log_level: str
    log_format: str
    metrics_port: int
    workers: int
    # Not in the table: KAFKA_* client properties (credentials as Secret), provenance, and the worker's index.
    client_properties: Mapping[str, str | Secret] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> the variable or flag it came from
    worker_index: int = 0  # which of `pipeline run --workers N` processes this is
    origins: Mapping[str, str] = field(default_factory=dict)  # key -> where from, for people: ".env /x/.env", ...
    warnings: tuple[str, ...] = ()  # things worth a warning once logging is set up (e.g. unknown .env keys)

    @property
    def values(self) -> Mapping[str, Any]:
        """Every setting of the table by key, in table order (for ``pipeline config`` and tests)."""
        return MappingProxyType({setting.key: getattr(self, setting.key) for setting in SETTINGS})

    def client_config(self) -> dict[str, str]:
        """The client properties with credentials revealed: for the composition root to hand to a client only."""
        return {
            name: value.reveal() if isinstance(value, Secret) else value
            for name, value in self.client_properties.items()
        }

    def secret_values(self) -> list[str]:
        """Client property values that must never reach a log line (passwords, keys, tokens)."""
        return [value.reveal() for value in self.client_properties.values() if isinstance(value, Secret)]

    def for_worker(self, index: int) -> Settings:
        return replace(self, worker_index=index)

    def effective_transactional_id(self, instance_slot: int | None) -> str:
        """TRANSACTIONAL_ID (per worker), else group.input.host.slot: see entrypoints/instance.py for why."""
        if self.transactional_id:
            base = self.transactional_id
            return base if self.worker_index == 0 else f"{base}.{self.worker_index}"
        slot = f"pid{os.getpid()}" if instance_slot is None else str(instance_slot)
        return f"{self.consumer_group}.{self.input_topic}.{socket.gethostname()}.{slot}"

    def pipeline_settings(self) -> PipelineSettings:
        return PipelineSettings(
            input_topic=self.input_topic,
            output_topic=self.output_topic,
            dlq_topic=self.dlq_topic,
            consumer_group=self.consumer_group,
            batch_size=self.batch_size,
            transaction_size=self.transaction_size,
            poll_timeout_s=self.poll_timeout_ms / 1000,
            commit_interval_s=self.commit_interval_ms / 1000,
            max_in_flight=self.max_in_flight,
            max_records_per_second=self.max_records_per_second or None,
            shutdown_timeout_s=self.shutdown_timeout_s,
            retry=RetryPolicy(
                limit=self.retry_limit,
                base_backoff_s=self.retry_backoff_ms / 1000,
                max_backoff_s=max(self.retry_max_backoff_ms, self.retry_backoff_ms) / 1000,
            ),
        )

    def rule_settings(self) -> RuleSettings:
        """Each RuleSettings field that is a setting's key takes that setting; and MIN_APP_VERSION its minimum."""
        same_names = {rule.name: getattr(self, rule.name) for rule in fields(RuleSettings) if rule.name in _BY_KEY}
        return RuleSettings(minimum_app_version=self.min_app_version, **same_names)


_TABLE_FIELDS = {f.name for f in fields(Settings) if f.default is MISSING and f.default_factory is MISSING}
if set(_BY_KEY) != _TABLE_FIELDS:  # a setting added to one and not the other: fail at import, not at first use
    raise TypeError(f"Settings fields and SETTINGS disagree: {sorted(_TABLE_FIELDS ^ set(_BY_KEY))}")


def client_property_name(variable: str) -> str | None:
    """``KAFKA_SECURITY_PROTOCOL`` -> ``security.protocol``; None for settings and tooling variables."""
    if not variable.startswith("KAFKA_") or variable in _KNOWN_NAMES or variable.startswith(_NOT_CLIENT_PROPERTIES):
        return None
    return variable[len("KAFKA_") :].lower().replace("_", ".")


def _read_env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """The file's NAME=VALUE pairs, and a warning for lines that are not such a pair (none if all are)."""
    if path.is_dir():
        raise ConfigError(f"ENV_FILE: {path} is a directory, not a file of NAME=VALUE lines")
    if not path.is_file():
        raise ConfigError(f"ENV_FILE: {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"ENV_FILE: cannot read {path}: {error.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"ENV_FILE: {path} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    bad_lines = [str(binding.original.line) for binding in parse_stream(io.StringIO(text)) if binding.error]
    dotenv_log = logging.getLogger("dotenv.main")
    disabled, dotenv_log.disabled = dotenv_log.disabled, True  # its warning does not name the file: ours does
    try:
        values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    finally:
        dotenv_log.disabled = disabled
    warnings = []
    if bad_lines:
        warnings.append(
            f"{path}: ignored line(s) {', '.join(bad_lines)}: not NAME=VALUE (quote values with spaces or #)"
        )
    return values, warnings


# Names a shared .env may hold for other tools: docker-compose.yml's own (see .env.example).
_OTHER_TOOLS_PREFIXES = ("STACK_", "COMPOSE_", "DOCKER_")


def _unknown_names(names: Mapping[str, str]) -> list[str]:
    """Names that are neither a setting, a client property (KAFKA_*) nor another tool's (STACK_*, ...)."""
    return sorted(
        name
        for name in names
        if name not in _KNOWN_NAMES
        and name != "ENV_FILE"
        and not name.startswith("KAFKA_")
        and not name.startswith(_OTHER_TOOLS_PREFIXES)
    )


def load_settings(
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting; raises ConfigError naming the first bad one.

    ``overrides`` are ``-c NAME=VALUE`` values keyed by setting key or variable
    name; ``flags`` are command-line options keyed by setting key (they win over
    ``-c``). The ``.env`` file (``ENV_FILE``, else ``./.env`` when present) is
    read first and the real environment wins over it, as in the Go consumer.
    """
    environ = dict(os.environ if environ is None else environ)
    path = Path(env_file or environ.get("ENV_FILE") or ".env").absolute()
    file_values: dict[str, str] = {}
    warnings: list[str] = []
    if env_file is not None or "ENV_FILE" in environ or path.exists():
        file_values, warnings = _read_env_file(path)
        unknown = _unknown_names(file_values)
        if unknown:
            warnings.append(
                f"{path}: ignored unknown setting(s) {', '.join(unknown)} (see `pipeline config --markdown`)"
            )
    merged = {**file_values, **environ}
    file_label = f".env {path}"

    by_name = {name: setting for setting in SETTINGS for name in setting.names}
    cli: dict[str, tuple[str, str, str]] = {}  # key -> (text, name for errors, origin for people)
    cli_properties: dict[str, str] = {}  # KAFKA_* variable given with -c -> origin for people
    for name, text in (overrides or {}).items():
        setting = _BY_KEY.get(name) or by_name.get(name.upper())
        if setting is None:
            property_name = client_property_name(name.upper())
            if property_name is None:
                raise ConfigError(f"{name}: unknown setting (see `pipeline config` for the list)")
            merged[name.upper()] = text
            cli_properties[name.upper()] = f"-c {name}"
            continue
        named = name.upper() if name.upper() in by_name else setting.name
        cli[setting.key] = (text, named, f"-c {name}")
    for key, text in (flags or {}).items():
        flag = f"--{key.replace('_', '-')}"
        cli[key] = (text, flag, f"flag {flag}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    origins: dict[str, str] = {}
    for setting in SETTINGS:
        origin, text, where = "default", setting.default, "default"
        if setting.key in cli:
            text, origin, where = cli[setting.key]
        else:
            for name in setting.names:
                if name in merged:
                    text, origin = merged[name], name
                    where = f"{name} from environment" if name in environ else f"{name} from {file_label}"
                    break
        try:
            values[setting.key] = setting.parse(text)
        except ValueError as error:
            raise ConfigError(f"{origin if origin != 'default' else setting.name}: {error}") from None
        sources[setting.key] = origin
        origins[setting.key] = where

    last_port = values["metrics_port"] + values["workers"] - 1
    if values["metrics_port"] and last_port > 65535:
        named = "METRICS_PORT" if sources["metrics_port"] == "default" else sources["metrics_port"]
        raise ConfigError(
            f"{named}: {values['metrics_port']} leaves no port for the last of {values['workers']} workers"
            " (each serves on METRICS_PORT + its index, up to 65535)"
        )

    properties: dict[str, str | Secret] = {}
    for variable, text in merged.items():
        property_name = client_property_name(variable)
        if property_name is not None:
            properties[property_name] = Secret(text) if is_secret_property(property_name) else text
            origins[f"client:{property_name}"] = cli_properties.get(variable) or (
                f"{variable} from environment" if variable in environ else f"{variable} from {file_label}"
            )
    return Settings(**values, client_properties=properties, sources=sources, origins=origins, warnings=tuple(warnings))


def settings_table_markdown() -> str:
    """The README's configuration table (``pipeline config --markdown``); a test keeps the README in sync."""
    rows = ["| Variable | Also accepted | Default | Meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        aliases = ", ".join(f"`{name}`" for name in setting.names[1:])
        rows.append(f"| `{setting.name}` | {aliases} | `{setting.default}` | {setting.help} |")
    return "\n".join(rows) + "\n"
