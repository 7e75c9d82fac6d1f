"""The closed error contract: what each adapter raises when the cluster cannot be used, and nothing else.

Every failure crossing a port is a PipelineError of the class the policy needs (application/errors.py);
no confluent-kafka or kafka-python exception gets through. The secured cases need the broker of
scripts/kafka-secure (SECURE_KAFKA_* variables); .ci/run starts it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from adapters.kafka_connection import KafkaConnection
from application.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    InvalidConfiguration,
    NotAuthorized,
    PipelineError,
)
from application.ports import MessageSink, MessageSource, TopicAdmin, TopicSpec
from tests.contract.kits import MemoryKit, Recorder
from tests.support.kafka_broker import require_kafka

CLIENTS = [
    pytest.param("confluent", marks=pytest.mark.integration),
    pytest.param("kafka-python", marks=pytest.mark.integration),
]
SECURE = os.environ.get("SECURE_KAFKA_SASL_SSL", "")


def needs_secure_broker() -> None:
    if not SECURE:
        if require_kafka():
            pytest.fail("REQUIRE_KAFKA is set but SECURE_KAFKA_* is not: start scripts/kafka-secure")
        pytest.skip('no secured broker (eval "$(scripts/kafka-secure start)")')


def nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there


def scram(user: str, password: str) -> KafkaConnection:
    certs = os.environ.get("SECURE_KAFKA_CERTS", "")
    return KafkaConnection(
        SECURE,
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": f"{certs}/ca.pem",
        },
    )


def adapters(client: str, connection: KafkaConnection) -> tuple[Callable[[str], MessageSource], TopicAdmin]:
    if client == "confluent":
        from adapters.confluent import ConfluentAdmin, ConfluentSource

        return (lambda group: ConfluentSource(connection, group)), ConfluentAdmin(connection)
    from adapters.kafka_python import KafkaPythonAdmin, KafkaPythonSource
    from adapters.kafka_python.config import connection_recovered

    connection_recovered()  # the client's diagnosis is per process: start each case afresh
    return (lambda group: KafkaPythonSource(connection, group)), KafkaPythonAdmin(connection)


def first_failure(
    source: MessageSource, timeout_s: float = 30.0, until: type[PipelineError] = PipelineError
) -> PipelineError:
    """Poll until the source raises ``until``; whatever it raises on the way must be one of the port's errors.

    A refused login is known only once the client has tried one: until then (longer on a loaded machine)
    the cluster is merely unavailable, which is the only other error the source may raise meanwhile.
    """
    source.subscribe(["contract-errors"], Recorder())
    deadline = time.monotonic() + timeout_s
    error: PipelineError | None = None
    try:
        while time.monotonic() < deadline:
            try:
                source.poll_batch(10, 0.2)
            except PipelineError as raised:
                error = raised
                if isinstance(raised, until):
                    return raised
                assert type(raised) is BrokerUnavailable, raised
    finally:
        source.close()
    raise AssertionError(f"no {until.__name__} within {timeout_s}s (last: {error!r})")


def test_the_memory_adapters_raise_nothing_outside_the_contract() -> None:
    kit = MemoryKit()
    source = kit.source("g")
    source.subscribe(["missing"], Recorder())
    assert source.poll_batch(10, 0.0) == []  # a missing topic is quiet, as with Kafka: no exception
    results: list[object] = []
    sink = kit.sink()
    sink.publish("missing", None, b"v", [], results.append)
    sink.flush(1.0)
    assert len(results) == 1  # its fate comes through the callback, never as a raised library error
    source.close()
    sink.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_nothing_listening_is_broker_unavailable(client: str) -> None:
    make_source, admin = adapters(client, KafkaConnection(nothing_listening()))
    error = first_failure(make_source("contract-errors"))
    assert type(error) is BrokerUnavailable, error
    with pytest.raises(BrokerUnavailable) as raised:
        admin.ensure_topics([TopicSpec("contract-errors", 1, 1)])
    admin.close()
    assert type(raised.value) is BrokerUnavailable
    assert raised.value.summary().startswith("broker unreachable: ")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_key_that_cannot_be_decrypted_is_invalid_configuration(client: str, tmp_path: os.PathLike[str]) -> None:
    needs_secure_broker()
    certs = os.environ["SECURE_KAFKA_CERTS"]
    connection = KafkaConnection(
        os.environ["SECURE_KAFKA_SSL"],
        {
            "security.protocol": "SSL",
            "ssl.ca.location": f"{certs}/ca.pem",
            "ssl.certificate.location": f"{certs}/pipeline.pem",
            "ssl.key.location": f"{certs}/pipeline.key",
            "ssl.key.password": "wrong",
        },
    )
    with pytest.raises(InvalidConfiguration, match="KAFKA_SSL_KEY_PASSWORD"):
        adapters(client, connection)


@pytest.mark.parametrize("client", CLIENTS)
def test_bad_sasl_credentials_are_authentication_failed(client: str) -> None:
    needs_secure_broker()
    make_source, admin = adapters(client, scram("pipeline", "not-the-password"))
    error = first_failure(make_source("contract-errors"), until=AuthenticationFailed)
    assert isinstance(error, AuthenticationFailed), error
    assert 'user "pipeline"' in str(error) and "KAFKA_SASL_PASSWORD" in str(error)
    assert "not-the-password" not in str(error)
    admin.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unauthorized_principal_is_not_authorized_with_the_resource(client: str) -> None:
    needs_secure_broker()
    make_source, admin = adapters(client, scram("noacl", os.environ.get("SECURE_KAFKA_NOACL_PASSWORD", "")))
    error = first_failure(make_source("contract-errors-group"), until=NotAuthorized)
    assert isinstance(error, NotAuthorized), error
    assert error.principal == "User:noacl"
    assert (error.resource_type, error.resource_name) in {
        ("group", "contract-errors-group"),
        ("topic", "contract-errors"),
    }
    with pytest.raises(NotAuthorized) as raised:
        admin.ensure_topics([TopicSpec("contract-errors", 1, 1)])
    admin.close()
    assert raised.value.resource_type in {"topic", "cluster"}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_sink_whose_records_cannot_be_delivered_names_a_refused_login(client: str) -> None:
    needs_secure_broker()
    connection = scram("pipeline", "not-the-password")
    _, admin = adapters(client, connection)  # resets kafka-python's diagnosis too
    admin.close()
    if client == "confluent":
        from adapters.confluent import ConfluentSink

        sink: MessageSink = ConfluentSink(connection)
    else:
        from adapters.kafka_python import KafkaPythonSink

        sink = KafkaPythonSink(connection)
    try:
        sink.publish("contract-errors", None, b"v", [], lambda error: None)
        deadline = time.monotonic() + 30
        while sink.problem() is None and time.monotonic() < deadline:
            sink.poll(0.5)
        assert isinstance(sink.problem(), AuthenticationFailed), sink.problem()
    finally:
        sink.close()
