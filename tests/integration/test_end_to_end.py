"""The service as a user runs it, against a real Apache Kafka broker, for each Kafka client library."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from adapters.generator import LoginGenerator
from adapters.schema import ProcessedLoginEventSchema
from application import dlq_headers
from application.messages import header_value
from tests.contract.kits import AdapterKit, ConfluentKit, KafkaPythonKit

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 10_000
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def run_service(
    bootstrap: str, client: str, topics: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BROKER_CLIENT": client,
            "INPUT_TOPIC": topics["input"],
            "OUTPUT_TOPIC": topics["output"],
            "DLQ_TOPIC": topics["dlq"],
            "CONSUMER_GROUP": topics["group"],
            "METRICS_PORT": "0",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "run", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_ten_thousand_records_end_to_end(kafka_bootstrap: str, client: str) -> None:
    kit: AdapterKit = ConfluentKit(kafka_bootstrap) if client == "confluent" else KafkaPythonKit(kafka_bootstrap)
    suffix = uuid.uuid4().hex[:8]
    topics = {"input": kit.topic(4), "output": kit.topic(4), "dlq": kit.topic(4), "group": f"e2e-{suffix}"}

    expected: dict[bytes, str | None] = {}
    sink = kit.sink()
    for record in LoginGenerator(seed=11).records(RECORDS):
        expected[record.value] = record.expected_reason
        sink.publish(topics["input"], record.key, record.value, [("origin", b"e2e")], lambda error: None)
        sink.poll(0)
    assert sink.flush(60)
    sink.close()
    assert len(expected) == RECORDS  # every generated value is distinct, so values identify records

    result = run_service(kafka_bootstrap, client, topics, "--idle-timeout", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    outputs = kit.read_all(topics["output"], sum(1 for r in expected.values() if r is None))
    letters = kit.read_all(topics["dlq"], sum(1 for r in expected.values() if r is not None))
    assert len(outputs) + len(letters) == RECORDS
    assert len({r.value for r in outputs}) == len(outputs), "duplicates on the output topic"
    assert len({r.value for r in letters}) == len(letters), "duplicates on the DLQ"

    # Every DLQ record: the original value, key and headers, with the x-dlq-* headers and the right reason.
    input_positions = {r.value: r for r in kit.read_all(topics["input"], RECORDS)}
    reasons: Counter[str] = Counter()
    for letter in letters:
        assert letter.value in expected, "a DLQ value that was never produced (bytes changed?)"
        assert expected[letter.value] is not None
        source = input_positions[letter.value]
        headers = dict(letter.headers)
        assert headers[dlq_headers.REASON].decode() == expected[letter.value]
        assert headers[dlq_headers.ERROR]
        assert headers[dlq_headers.SOURCE_TOPIC].decode() == topics["input"]
        assert int(headers[dlq_headers.SOURCE_PARTITION]) == source.partition
        assert int(headers[dlq_headers.SOURCE_OFFSET]) == source.offset
        assert RFC3339_UTC.match(headers[dlq_headers.FAILED_AT].decode())
        assert header_value(letter.headers, "origin") == b"e2e"
        assert letter.key == source.key
        reasons[headers[dlq_headers.REASON].decode()] += 1
    assert set(reasons) == {reason for reason in expected.values() if reason is not None}  # every reason appears

    # Every processed record follows the published contract.
    schema = ProcessedLoginEventSchema()
    valid_by_user = {
        json.loads(value)["user_id"]: json.loads(value) for value, reason in expected.items() if reason is None
    }
    for output in outputs:
        event = json.loads(output.value or b"")
        assert schema.validate(event) == {}
        original = valid_by_user[event["user_id"]]
        assert output.key == event["user_id"].encode()
        assert event["locale"] == original["locale"].lower()
        assert event["timestamp"] == int(original["timestamp"]) and type(event["timestamp"]) is int
        assert RFC3339_UTC.match(event["processed_at"])
        assert {k: v for k, v in event.items() if k not in ("locale", "timestamp", "processed_at")} == {
            k: v for k, v in original.items() if k not in ("locale", "timestamp")
        }
    assert {json.loads(o.value or b"")["user_id"] for o in outputs} == set(valid_by_user)
