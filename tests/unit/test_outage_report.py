"""The broker-down policy's log and readiness: the cause once, a reminder at most a minute, /readyz the same."""

from __future__ import annotations

import logging

import pytest

from application.errors import AuthenticationFailed, BrokerUnavailable, NotAuthorized, PipelineError, TlsFailed
from application.health import HealthState
from application.loop import OutageReport, duration
from tests.fakes import FakeClock

LOGIN = AuthenticationFailed(
    'authentication failed for user "pipeline" (SASL SCRAM-SHA-512): check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD'
)


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "application.loop" and r.levelno >= logging.WARNING]


def test_the_cause_is_said_once_then_reminded_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = OutageReport(clock)
    with caplog.at_level(logging.INFO):
        report.down(LOGIN, new_outage=True)
        for _ in range(59):  # a retry every second for a minute
            clock.mono += 1
            report.down(LOGIN, new_outage=False)
        assert said(caplog) == [f"{LOGIN}; retrying with backoff (not ready meanwhile)"]
        clock.mono += 1
        report.down(LOGIN, new_outage=False)
        assert said(caplog)[-1] == f"still {LOGIN}, for 1m00s; retrying"
        assert len(said(caplog)) == 2


def test_a_new_cause_is_said_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = OutageReport(clock)
    with caplog.at_level(logging.INFO):
        report.down(LOGIN, new_outage=True)
        clock.mono += 5
        tls = TlsFailed("TLS handshake with b:9093 failed (certificate verify failed): check KAFKA_SSL_CA_LOCATION")
        report.down(tls, new_outage=False)
        assert said(caplog)[-1].startswith("TLS handshake with b:9093 failed")
        report.up(3)
        assert "broker reachable again after 5s (3 failed attempt(s))" in caplog.text


def test_readiness_gives_the_same_cause() -> None:
    health = HealthState(FakeClock())
    health.running = True
    health.last_error = LOGIN.summary()
    assert health.readiness().reason == str(LOGIN)
    health.last_error = BrokerUnavailable("cannot reach Kafka at b:9092").summary()
    assert health.readiness().reason == (
        "broker unreachable: cannot reach Kafka at b:9092 (check KAFKA_BOOTSTRAP_SERVERS, and that the cluster is up)"
    )


def test_not_authorized_names_the_principal_resource_and_operation() -> None:
    error = NotAuthorized("Read", "topic", "user-login", "User:pipeline")
    assert isinstance(error, PipelineError)
    assert str(error) == (
        'not authorized to Read topic "user-login" as User:pipeline: '
        "grant it with kafka-acls --add --allow-principal User:pipeline --operation Read --topic user-login"
    )
    assert "this client's principal" in str(NotAuthorized("IdempotentWrite", "cluster", "kafka-cluster"))


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (5, 75, 3700)] == ["5s", "1m15s", "1h01m"]
