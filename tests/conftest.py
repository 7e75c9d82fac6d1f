"""Session fixtures: the real Kafka broker, found or started once for all integration tests."""

from collections.abc import Iterator

import pytest

from tests.support.kafka_broker import BrokerHandle, find_broker, require_kafka


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BrokerHandle]:
    handle, reason = find_broker()
    if handle is None:
        if require_kafka():
            pytest.fail(f"a Kafka broker is required (REQUIRE_KAFKA=1) but none is available: {reason}")
        pytest.skip(f"no Kafka broker: {reason}")
    with handle:
        yield handle


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerHandle) -> str:
    return kafka_broker.bootstrap_servers
