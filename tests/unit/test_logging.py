"""Logs: secrets never appear, JSON lines carry context, per-record detail stays at DEBUG."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from loguru import logger

from adapters.logging import Redactor, configure_logging
from application.logs import ThrottledWarning
from application.messages import ConsumedRecord


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root_handlers = logging.getLogger().handlers[:]
    yield io.StringIO()
    logger.remove()
    logging.getLogger().handlers[:] = root_handlers  # give pytest its own capture back


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_secrets_never_reach_the_log(captured: io.StringIO) -> None:
    configure_logging("debug", "json", secrets=["s3cr3t-Pa55"], stream=captured)
    log = logging.getLogger("adapters.confluent.config")
    log.warning("connecting with sasl.password=s3cr3t-Pa55 and more")
    log.error("config dump: {'sasl.password': 's3cr3t-Pa55', 'ssl.key.password': 'other-secret'}")
    log.info("token: abc123def and api_key=XYZ789")
    log.warning("user typed %s", "s3cr3t-Pa55", extra={"topic": "s3cr3t-Pa55"})
    text = captured.getvalue()
    assert "s3cr3t-Pa55" not in text
    assert "other-secret" not in text and "abc123def" not in text and "XYZ789" not in text
    assert text.count("***") >= 5


def test_json_lines_carry_service_and_record_context(captured: io.StringIO) -> None:
    configure_logging("info", "json", stream=captured, context={"worker": 2})
    logging.getLogger("application.at_least_once").warning(
        "publish failed", extra={"topic": "user-login", "partition": 3, "offset": 42}
    )
    [entry] = lines(captured)
    assert entry["service"] == "user-login-pipeline"
    assert entry["level"] == "WARNING" and entry["message"] == "publish failed"
    assert (entry["topic"], entry["partition"], entry["offset"], entry["worker"]) == ("user-login", 3, 42, 2)
    assert entry["logger"] == "application.at_least_once"


def test_level_and_text_format_are_configurable(captured: io.StringIO) -> None:
    configure_logging("warning", "text", stream=captured)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert "hidden" not in captured.getvalue() and "shown" in captured.getvalue()


def test_a_recurring_per_record_event_warns_once_per_interval_and_counts(captured: io.StringIO) -> None:
    configure_logging("info", "json", stream=captured)
    now = [0.0]
    warn = ThrottledWarning(logging.getLogger("application.at_least_once"), interval_s=30, monotonic=lambda: now[0])
    for offset in range(1000):
        warn("record %d failed", offset, record=ConsumedRecord("t", 0, offset, None, b""))
    now[0] = 31.0
    warn("record %d failed", 1000, record=ConsumedRecord("t", 0, 1000, None, b""))
    warnings = [e for e in lines(captured) if e["level"] == "WARNING"]
    assert len(warnings) == 2
    assert warnings[1]["message"] == "record 1000 failed (1000 such event(s) since the last report)"
    assert warnings[1]["offset"] == 1000


def test_redactor_leaves_ordinary_text_alone() -> None:
    redact = Redactor(["hunter2"])
    assert redact("consumed 500 records from user-login[3]") == "consumed 500 records from user-login[3]"
    assert redact("password=hunter2") == "password=***"
