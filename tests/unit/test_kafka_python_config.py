"""kafka-python adapters: our librdkafka-named client properties become kafka-python keyword arguments."""

import re
from typing import Any

import pytest

from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python.config import api_version_ceiling, client_config, translate
from application.errors import InvalidConfiguration


def _sasl(protocol: str, key: str, mechanism: str, role: str, expected: tuple[str, str], case: str) -> Any:
    """A SASL login's properties (``key``: either spelling of the mechanism) and the arguments they become."""
    return pytest.param(
        {"security.protocol": protocol, key: mechanism, "sasl.username": "svc", "sasl.password": "pw"},
        role,
        {"security_protocol": expected[0], "sasl_mechanism": expected[1],
         "sasl_plain_username": "svc", "sasl_plain_password": "pw"},
        id=case,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("properties", "role", "expected"),
    [
        _sasl("SASL_SSL", "sasl.mechanisms", "PLAIN", "consumer", ("SASL_SSL", "PLAIN"), "sasl-plain"),
        _sasl(
            "sasl_plaintext", "sasl.mechanism", "scram-sha-512", "producer", ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
            "sasl-scram-sha-512",
        ),
        pytest.param(
            {"security.protocol": "SSL", "ssl.ca.location": "/certs/ca.pem", "ssl.certificate.location": "/certs/c.pem",
             "ssl.key.location": "/certs/k.pem", "ssl.key.password": "secret",
             "ssl.endpoint.identification.algorithm": "none"},
            "admin",
            {
                "security_protocol": "SSL",
                "ssl_cafile": "/certs/ca.pem",
                "ssl_certfile": "/certs/c.pem",
                "ssl_keyfile": "/certs/k.pem",
                "ssl_password": "secret",
                "ssl_check_hostname": False,
            },
            id="ssl-mutual-tls-no-hostname-check",
        ),
        pytest.param(
            {"ssl.endpoint.identification.algorithm": "https", "client.id": "login-pipeline"},
            "consumer",
            {"ssl_check_hostname": True, "client_id": "login-pipeline"},
            id="hostname-check-and-client-id",
        ),
        pytest.param(
            {"fetch.min.bytes": "1024", "check.crcs": "false", "request.timeout.ms": "20000"},
            "consumer",
            {"fetch_min_bytes": 1024, "check_crcs": False, "request_timeout_ms": 20000},
            id="generic-int-and-bool",
        ),
        pytest.param(
            {"retries": "5", "compression.type": "gzip", "acks": "all", "linger.ms": "20"},
            "producer",
            {"retries": 5.0, "compression_type": "gzip", "acks": "all", "linger_ms": 20},
            id="generic-float-and-text",
        ),
        pytest.param(
            {"linger.ms": "20", "batch.size": "65536", "fetch.min.bytes": "1"},
            "admin",
            {},
            id="other-clients-settings-skipped",
        ),
        pytest.param(
            {"consumer.fetch.max.wait.ms": "100", "producer.linger.ms": "7", "client.id": "shared"},
            "consumer",
            {"fetch_max_wait_ms": 100, "client_id": "shared"},
            id="role-prefix-consumer",
        ),
        pytest.param(
            {"consumer.fetch.max.wait.ms": "100", "producer.linger.ms": "7", "producer.client.id": "mine",
             "client.id": "shared"},
            "producer",
            {"linger_ms": 7, "client_id": "mine"},
            id="role-prefix-wins-over-shared",
        ),
        pytest.param({"api.version": "3.7"}, "producer", {"api_version": (3, 7)}, id="api-version-tuple"),
    ],
)  # fmt: skip
def test_translates_properties(properties: dict[str, str], role: str, expected: dict[str, Any]) -> None:
    assert translate(KafkaConnection("b:9092", properties), role) == expected


@pytest.mark.parametrize(
    ("properties", "role", "message"),
    [
        pytest.param(
            {"foo.bar": "1"}, "consumer",
            "KAFKA_FOO_BAR: property 'foo.bar' is not supported by kafka-python", id="unknown-property",
        ),
        pytest.param(
            {"queue.buffering.max.messages": "1000"}, "producer",
            "KAFKA_QUEUE_BUFFERING_MAX_MESSAGES: property 'queue.buffering.max.messages' is not supported",
            id="librdkafka-only-property",
        ),
        pytest.param(
            {"consumer.linger.ms": "5"}, "consumer",
            "KAFKA_CONSUMER_LINGER_MS: property 'linger.ms' is not supported by kafka-python",
            id="prefixed-for-the-wrong-client",
        ),
        pytest.param(
            {"sasl.oauthbearer.token.endpoint.url": "https://idp"}, "consumer",
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: property 'sasl.oauthbearer.token.endpoint.url'",
            id="oauthbearer-property",
        ),
        pytest.param({"sasl.mechanism": "OAUTHBEARER"}, "producer", "KAFKA_SASL_MECHANISM: SASL OAUTHBEARER",
                     id="oauthbearer-mechanism"),
        pytest.param({"sasl.mechanism": "KERBEROS5"}, "producer", "KAFKA_SASL_MECHANISM: expected one of",
                     id="unknown-mechanism"),
        pytest.param({"security.protocol": "TLS"}, "admin", "KAFKA_SECURITY_PROTOCOL: expected one of",
                     id="unknown-protocol"),
        pytest.param({"ssl.endpoint.identification.algorithm": "dns"}, "consumer",
                     "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM: expected https or none", id="bad-hostname-check"),
        pytest.param({"fetch.min.bytes": "lots"}, "consumer", "KAFKA_FETCH_MIN_BYTES: expected an integer",
                     id="not-an-integer"),
        pytest.param({"check.crcs": "maybe"}, "consumer", "KAFKA_CHECK_CRCS: expected true or false",
                     id="not-a-boolean"),
        pytest.param({"partitioner": "murmur2"}, "producer",
                     "KAFKA_PARTITIONER: property 'partitioner' is not supported", id="takes-a-python-object"),
        pytest.param({"acks": "2"}, "producer", "KAFKA_ACKS: expected all, -1, 0 or 1", id="bad-acks"),
    ],
)  # fmt: skip
def test_refuses_what_kafka_python_cannot_take(properties: dict[str, str], role: str, message: str) -> None:
    with pytest.raises(InvalidConfiguration, match="^" + re.escape(message)):
        translate(KafkaConnection("b:9092", properties), role)


def test_refusal_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"property 'x\.y'"):
        translate(KafkaConnection("b:9092", {"x.y": "1"}), "consumer")


def test_client_config_layers_defaults_then_properties() -> None:
    connection = KafkaConnection(" a:9092, b:9093 ", {"max.poll.records": "50", "client.id": "me"})
    config = client_config(connection, "consumer", {"max_poll_records": 500, "group_id": "g"})
    assert config["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert config["api_version"] == api_version_ceiling()  # no broker probe while constructing
    assert config["max_poll_records"] == 50
    assert (config["group_id"], config["client_id"]) == ("g", "me")


def test_client_config_refuses_settings_the_adapter_owns() -> None:
    connection = KafkaConnection("b:9092", {"consumer.enable.auto.commit": "true"})
    expected = "KAFKA_CONSUMER_ENABLE_AUTO_COMMIT: property 'enable.auto.commit' is set by the kafka-python adapter"
    with pytest.raises(InvalidConfiguration, match=re.escape(expected)):
        client_config(connection, "consumer", {"enable_auto_commit": False}, reserved=("enable_auto_commit",))


def test_user_api_version_overrides_the_ceiling() -> None:
    config = client_config(KafkaConnection("b:9092", {"api.version": "2.8.1"}), "admin", {})
    assert config["api_version"] == (2, 8, 1)


def test_kafka_pythons_loggers_are_folded_from_import_on() -> None:
    """The first admin client at start bootstraps (and logs every failed reconnect) before any other call."""
    import logging

    from adapters.kafka_python import config

    manager = logging.getLogger("kafka.net.manager")
    assert config._REPEAT_FILTER in manager.filters
