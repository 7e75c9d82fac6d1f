"""Each client's one translation helper: its errors and log lines become the port's error classes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from kafka import errors as kafka_errors

from adapters.confluent.config import ErrorReporter, translate
from adapters.kafka_connection import KafkaConnection, check_tls_files, principal
from adapters.kafka_python import config as kafka_python_config
from application.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    FatalBrokerError,
    InvalidConfiguration,
    NotAuthorized,
    SecurityProtocolMismatch,
    TlsFailed,
)

SASL = KafkaConnection(
    "b:9094",
    {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pipeline",
        "sasl.password": "pw",
    },
)
SCRAM_LINE = (
    'authentication failed for user "pipeline" (SASL SCRAM-SHA-512): check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD'
)


def _reporter_told(code: int, text: str) -> ErrorReporter:
    """A consumer's ErrorReporter after librdkafka's error callback reported ``code`` with ``text``."""
    reporter = ErrorReporter("consumer", SASL)
    reporter(KafkaError(code, text))
    return reporter


def test_confluent_a_refused_login_outlives_the_transport_failures_that_follow_it() -> None:
    reporter = _reporter_told(
        KafkaError._AUTHENTICATION,
        "sasl_ssl://b:9094/bootstrap: SASL authentication error: Authentication failed during authentication "
        "due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 312ms in state AUTH_REQ)",
    )
    reporter(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    failure = KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    error = translate(failure, reporter, operation="Read", resources={}, connection=SASL)
    assert isinstance(error, AuthenticationFailed)
    assert str(error) == SCRAM_LINE
    assert reporter.unavailable() is not reporter.unavailable()  # fresh each time: no traceback piling up
    reporter.reachable()
    assert type(reporter.unavailable()) is BrokerUnavailable


def test_confluent_tls_failure_names_the_ca_setting() -> None:
    reporter = _reporter_told(
        KafkaError._SSL,
        "sasl_ssl://b:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify "
        "failed: broker certificate could not be verified (after 8ms in state SSL_HANDSHAKE)",
    )
    error = reporter.unavailable()
    assert isinstance(error, TlsFailed)
    assert str(error).startswith("TLS handshake with b:9094 failed (certificate verify failed")
    assert str(error).endswith("check KAFKA_SSL_CA_LOCATION")


@pytest.mark.parametrize(
    ("code", "kind", "name", "operation"),
    [
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "group", "g", "Read"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "topic", "user-login", "Read"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "cluster", "kafka-cluster", "IdempotentWrite"),
    ],
)
def test_confluent_authorization_errors_name_the_resource(code: int, kind: str, name: str, operation: str) -> None:
    error = translate(
        KafkaError(code), ErrorReporter("consumer", SASL), operation="Read",
        resources={"group": "g", "topic": "user-login"}, connection=SASL,
    )  # fmt: skip
    assert isinstance(error, NotAuthorized)
    assert (error.operation, error.resource_type, error.resource_name, error.principal) == (
        operation, kind, name, "User:pipeline",
    )  # fmt: skip


def test_confluent_other_errors() -> None:
    reporter = ErrorReporter("consumer", SASL)
    assert isinstance(
        translate(KafkaError(KafkaError._INVALID_ARG), reporter, operation="Read", resources={}, connection=SASL),
        InvalidConfiguration,
    )
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    assert isinstance(translate(fatal, reporter, operation="Read", resources={}, connection=SASL), FatalBrokerError)


def test_kafka_python_classes() -> None:
    translate_error = kafka_python_config.translate_error
    group = translate_error(
        kafka_errors.GroupAuthorizationFailedError("g"), SASL, operation="Read", resources={"group": "g"}
    )
    assert isinstance(group, NotAuthorized) and group.resource_type == "group" and group.principal == "User:pipeline"
    topic = translate_error(
        kafka_errors.TopicAuthorizationFailedError({"user-login"}), SASL, operation="Read", resources={}
    )
    assert isinstance(topic, NotAuthorized) and topic.resource_name == "user-login"
    assert isinstance(
        translate_error(kafka_errors.SaslAuthenticationFailedError(), SASL, operation="Read", resources={}),
        AuthenticationFailed,
    )
    assert isinstance(
        translate_error(kafka_errors.KafkaConfigurationError("x"), SASL, operation="Read", resources={}),
        InvalidConfiguration,
    )
    assert isinstance(
        translate_error(kafka_errors.KafkaTimeoutError(), SASL, operation="Read", resources={}), BrokerUnavailable
    )
    assert isinstance(
        translate_error(kafka_errors.ProducerFencedError(), SASL, operation="Read", resources={}), FatalBrokerError
    )


def test_kafka_python_login_failures_it_logs_are_remembered_and_folded(caplog: pytest.LogCaptureFixture) -> None:
    kafka_python_config.connection_recovered()
    logger = logging.getLogger("kafka.net.connection")
    kafka_python_config.quiet_repeated_client_logs()
    with caplog.at_level(logging.WARNING, logger="kafka"):
        for _ in range(5):
            logger.error(
                "<KafkaConnection node_id=bootstrap-0 (disconnected)>: Connection lost: [Error 58] "
                "SaslAuthenticationFailedError: SaslAuthenticationFailedError: Authentication failed during "
                "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
            )
    assert not [r for r in caplog.records if r.name.startswith("kafka") and r.levelno >= logging.WARNING]
    problem = kafka_python_config.connection_problem(SASL)
    assert isinstance(problem, AuthenticationFailed) and str(problem) == SCRAM_LINE
    kafka_python_config.connection_recovered()
    assert kafka_python_config.connection_problem(SASL) is None


def test_tls_files_are_read_at_start(tmp_path: Path) -> None:
    check_tls_files({})  # nothing to read
    with pytest.raises(InvalidConfiguration, match=r"^KAFKA_SSL_CA_LOCATION: cannot read .*No such file"):
        check_tls_files({"ssl.ca.location": str(tmp_path / "missing.pem")})
    garbage = tmp_path / "client.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(InvalidConfiguration, match="KAFKA_SSL_KEY_PASSWORD: cannot read the client certificate"):
        check_tls_files(
            {"ssl.certificate.location": str(garbage), "ssl.key.location": str(garbage), "ssl.key.password": "x"}
        )


PLAINTEXT = KafkaConnection("b:9093", {})
BOOTSTRAP_DROPPED = (
    "Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected (backoff 0.1 secs)"
)


def test_a_broker_closing_every_connection_at_once_is_named_a_security_protocol_mismatch() -> None:
    reporter = ErrorReporter("consumer", PLAINTEXT)
    dropped = (
        "b:9093/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN "
        "(after 1ms in state APIVERSION_QUERY)"
    )
    reporter.connection_failed(dropped)
    mismatch = reporter.known_cause()
    assert isinstance(mismatch, SecurityProtocolMismatch) and "check KAFKA_SECURITY_PROTOCOL" in str(mismatch)
    reporter.connection_failed("b:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: Connection refused")
    assert reporter.known_cause() is None  # a broker that refuses connections is down, not mismatched

    kafka_python_config.connection_recovered()
    logger = logging.getLogger("kafka.net.manager")
    kafka_python_config.quiet_repeated_client_logs()
    for _ in range(3):
        logger.warning(BOOTSTRAP_DROPPED)
        # a slow answer (a loaded machine) says nothing about why connections are closed: it clears nothing
        logger.error("Connection failed: KafkaTimeoutError: Request timed out after 5000 ms")
    assert isinstance(kafka_python_config.connection_problem(PLAINTEXT), SecurityProtocolMismatch)
    assert isinstance(kafka_python_config.connection_problem(SASL), AuthenticationFailed)
    kafka_python_config.connection_recovered()


def test_kafka_python_a_restarting_broker_is_not_mistaken_for_a_refused_login() -> None:
    kafka_python_config.connection_recovered()
    kafka_python_config.quiet_repeated_client_logs()
    connection = logging.getLogger("kafka.net.connection")
    for _ in range(3):  # a restart drops working connections, then refuses new ones
        connection.error(
            "<KafkaConnection node_id=1 broker_version=(4, 0) (disconnected)>: "
            "Connection lost: KafkaConnectionError: socket disconnected"
        )
    logging.getLogger("kafka.net.manager").warning(BOOTSTRAP_DROPPED)
    connection.error(
        "<KafkaConnection node_id=1 (disconnected)>: Connection failed: KafkaConnectionError: Connection refused"
    )
    logging.getLogger("kafka.net.manager").warning(BOOTSTRAP_DROPPED)
    assert kafka_python_config.connection_problem(SASL) is None
    assert kafka_python_config.connection_problem(PLAINTEXT) is None
    kafka_python_config.connection_recovered()


def test_a_client_certificate_is_named_by_its_subject() -> None:
    certificate = str(Path(__file__).parents[1] / "data" / "client-certificate.pem")
    properties = {"security.protocol": "SSL", "ssl.certificate.location": certificate}
    assert principal(properties) == 'the client certificate "CN=pipeline,OU=Data,O=Example"'
    refused = NotAuthorized("Read", "topic", "user-login", principal(properties))
    assert 'as the client certificate "CN=pipeline,OU=Data,O=Example"' in str(refused)
    assert "--allow-principal User:<principal>" in str(refused)  # the broker's mapping rules decide the name
    assert principal({"security.protocol": "SSL", "ssl.certificate.location": "/no/such.pem"}) == ""
