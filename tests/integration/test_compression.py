"""Input compressed by other producers: each client reads every codec Kafka offers.

kafka-python decodes lz4, zstd and snappy only with optional packages; without
them its consumer fails on the first such batch, so they are dependencies.
"""

from __future__ import annotations

import pytest

from adapters.confluent import ConfluentSink
from application.messages import DeliveryError
from tests.contract.kits import ConfluentKit, KafkaPythonKit

pytestmark = pytest.mark.integration

CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_records_another_producer_compressed_are_read_intact(kafka_bootstrap: str, client: str, codec: str) -> None:
    writer = ConfluentKit(kafka_bootstrap)
    topic = writer.topic(partitions=1)
    sink = ConfluentSink(writer.connection, extra={"compression.type": codec})
    values = [f"login-{index}-".encode() * 20 for index in range(300)]
    outcomes: list[DeliveryError | None] = []
    for value in values:
        sink.publish(topic, None, value, [], outcomes.append)
    assert sink.flush(30)
    sink.close()
    assert outcomes == [None] * len(values)

    reader = ConfluentKit(kafka_bootstrap) if client == "confluent" else KafkaPythonKit(kafka_bootstrap)
    records = reader.read_all(topic, len(values), timeout_s=60)
    assert [record.value for record in records] == values
