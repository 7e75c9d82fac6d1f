"""loguru set-up: text for people, JSON lines for collectors, secrets scrubbed from both.

The domain and application layers log through the standard ``logging``
module (they may not import loguru); an intercepting handler forwards those
records here, with any ``extra`` fields (topic, partition, offset) kept.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
from loguru import logger

SERVICE_NAME = "user-login-pipeline"
_REDACTED = "***"
# key=value or key: value pairs whose value is secret, whatever produced the text.
_SECRET_PAIRS = re.compile(
    r"(?i)((?:sasl[._]?)?(?:password|passwd|secret|api[._]?key|private[._]?key|token)[\"']?\s*[=:]\s*[\"']?)([^\s,;\"'}]+)"
)
_STANDARD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Client libraries chat at INFO about every connection; their warnings are what operators need.
_NOISY_LIBRARIES = ("kafka", "confluent_kafka", "urllib3", "testcontainers", "docker")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return _SECRET_PAIRS.sub(lambda m: m.group(1) + _REDACTED, text)


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}
        logger.bind(logger_name=record.name, **extra).opt(depth=6, exception=record.exc_info).log(
            level, record.getMessage()
        )


def _json_sink(stream: TextIO, service: str) -> Any:
    def write(message: Any) -> None:
        record = message.record
        extra = dict(record["extra"])
        entry: dict[str, Any] = {
            "ts": record["time"].isoformat(),
            "level": record["level"].name,
            "service": service,
            "logger": extra.pop("logger_name", record["name"]),
            "message": record["message"],
        }
        entry.update({k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in extra.items()})
        if record["exception"] is not None:
            entry["exception"] = "".join(traceback.format_exception(*record["exception"]))
        stream.write(orjson.dumps(entry).decode() + "\n")
        stream.flush()

    return write


def _text_format(record: Any) -> str:
    context = " ".join(f"{k}={v}" for k, v in record["extra"].items() if k not in {"logger_name", "redactor"})
    suffix = f" <dim>{context}</dim>" if context else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        "<cyan>{extra[logger_name]}</cyan> {message}" + suffix.replace("{", "{{").replace("}", "}}") + "\n{exception}"
    )


def configure_logging(
    level: str = "info",
    log_format: str = "text",
    *,
    secrets: Iterable[str] = (),
    service: str = SERVICE_NAME,
    stream: TextIO | None = None,
    context: dict[str, object] | None = None,
) -> None:
    """Route all logging to one loguru sink on stderr (stdout stays free for command output)."""
    redact = Redactor(secrets)

    def patch(record: Any) -> None:
        record["message"] = redact(record["message"])
        record["extra"].setdefault("logger_name", record["name"])
        for key, value in list(record["extra"].items()):
            if isinstance(value, str):
                record["extra"][key] = redact(value)

    target = stream or sys.stderr
    logger.remove()
    logger.configure(patcher=patch, extra=context or {})
    if log_format == "json":
        logger.add(_json_sink(target, service), level=level.upper(), format="{message}", backtrace=False)
    else:
        logger.add(target, level=level.upper(), format=_text_format, colorize=target.isatty(), backtrace=False)
    logging.basicConfig(
        handlers=[_InterceptHandler()], level=logging.DEBUG if level in ("debug", "trace") else logging.INFO, force=True
    )
    for name in _NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "trace" else logging.WARNING)
