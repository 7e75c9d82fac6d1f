"""A record too large for the output, or for the DLQ too, on the real broker, for both clients and guarantees.

The input topic takes records of up to 4 MiB; one 2 MB record sits among small ones. The output topic
was created with the broker's default limit (about 1 MiB), so it refuses that record: it must reach the
DLQ byte for byte as ``publish_failed`` when ``--ensure-topics`` created the DLQ with room for it, and
stop only its own partition, without ever being skipped, when an existing DLQ is as small as the output.
"""

from __future__ import annotations

import base64
import json
import random
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from adapters.kafka_connection import KafkaConnection
from application import dlq_headers
from application.messages import header_value
from application.ports import MessageSink
from tests.contract.kits import AdapterKit, ConfluentKit, KafkaPythonKit
from tests.integration.harness import Service, Topics

pytestmark = pytest.mark.integration

INPUT_LIMIT = 4 * 1024 * 1024
BIG_BYTES = 2 * 1000 * 1000
GOOD = {"app_version": "2.3.0", "device_type": "iOS", "ip": "84.115.150.27", "locale": "RU"}
COMBINATIONS = [
    pytest.param("confluent", "at-least-once", id="confluent-alo"),
    pytest.param("confluent", "exactly-once", id="confluent-eos"),
    pytest.param("kafka-python", "at-least-once", id="kafka-python-alo"),
    pytest.param("kafka-python", "exactly-once", id="kafka-python-eos"),
]
# Valid, so headed for the output; random, so that compression cannot bring it under the output's limit.
BIG = json.dumps(
    {**GOOD, "user_id": "big", "note": base64.b64encode(random.Random(7).randbytes(BIG_BYTES * 3 // 4)).decode()}
).encode()
_STALLED = re.compile(r"^pipeline_stalled_partitions ([0-9.e+]+)$", re.M)


def kit_for(client: str, bootstrap: str) -> AdapterKit:
    return ConfluentKit(bootstrap) if client == "confluent" else KafkaPythonKit(bootstrap)


def large_sink(client: str, bootstrap: str) -> MessageSink:
    """A producer that lets the 2 MB record through (the kits' producers keep the clients' 1 MB default)."""
    connection = KafkaConnection(bootstrap)
    if client == "confluent":
        from adapters.confluent import ConfluentSink

        return ConfluentSink(connection, max_message_bytes=INPUT_LIMIT)
    from adapters.kafka_python import KafkaPythonSink

    return KafkaPythonSink(connection, max_message_bytes=INPUT_LIMIT)


def input_topic(kit: AdapterKit) -> str:
    return kit.topic(4, INPUT_LIMIT, prefix="poison-in")


def produce(client: str, bootstrap: str, topic: str, good: int) -> None:
    """``good`` small valid records, with the big one in the middle; every value carries a distinct user id."""
    sink = large_sink(client, bootstrap)
    failures: list[Any] = []

    def delivered(error: Any) -> None:
        if error is not None:
            failures.append(error)

    try:
        for number in range(good):
            if number == good // 2:
                sink.publish(topic, b"big", BIG, [("origin", b"poison")], delivered)
            sink.publish(
                topic, f"u{number}".encode(), json.dumps({**GOOD, "user_id": f"u{number}"}).encode(), (), delivered
            )
            if number % 1000 == 0:
                sink.poll(0)
        assert sink.flush(60)
    finally:
        sink.close()
    assert not failures, failures[:3]


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the end offset of each of the topic's four partitions."""
    # read_uncommitted: ask for what is committed now, rather than wait while a transaction holds offsets pending.
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        partitions = [KafkaTopicPartition(topic, number) for number in range(4)]
        committed = {tp.partition: tp.offset for tp in reader.committed(partitions, timeout=10)}
        ends = {
            number: reader.get_watermark_offsets(KafkaTopicPartition(topic, number), timeout=10)[1]
            for number in range(4)
        }
    finally:
        reader.close()
    return committed, ends


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


@pytest.mark.parametrize(("client", "guarantee"), COMBINATIONS)
def test_an_oversized_record_reaches_a_dlq_the_service_created_byte_for_byte(
    kafka_bootstrap: str, client: str, guarantee: str
) -> None:
    kit = kit_for(client, kafka_bootstrap)
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(input_topic(kit), kit.topic(4), f"poison-dlq-{suffix}", f"poison-{suffix}")  # the DLQ: missing
    good = 10_000
    produce(client, kafka_bootstrap, topics.input, good)

    service = Service(
        kafka_bootstrap, client, topics, "--ensure-topics", "--idle-timeout", "5", PROCESSING_GUARANTEE=guarantee
    )
    assert service.wait(240) == 0, service.output()
    log = service.output(tail=None)
    assert "Traceback" not in log

    [letter] = kit.read_all(topics.dlq, 1, timeout_s=60)
    assert letter.value == BIG, "the dead letter is the record, byte for byte"
    assert letter.key == b"big" and header_value(letter.headers, "origin") == b"poison"
    assert header_value(letter.headers, dlq_headers.REASON) == dlq_headers.PUBLISH_FAILED.encode()
    assert header_value(letter.headers, dlq_headers.ERROR), "the client's error text"
    assert header_value(letter.headers, dlq_headers.CONSUMER_GROUP) == topics.group.encode()
    assert header_value(letter.headers, dlq_headers.SOURCE_TIMESTAMP_TYPE) == b"CreateTime"
    assert int(header_value(letter.headers, dlq_headers.SOURCE_TIMESTAMP) or b"0") > 0

    outputs = kit.read_all(topics.output, good, timeout_s=120)
    users = [json.loads(record.value or b"")["user_id"] for record in outputs]
    assert set(users) == {f"u{number}" for number in range(good)}, "every other record reached the output"
    if guarantee == "exactly-once":
        assert len(users) == good

    admin = kit.admin()
    try:
        limits = admin.max_message_bytes([topics.input, topics.dlq])
    finally:
        admin.close()
    assert limits[topics.dlq] >= limits[topics.input] == INPUT_LIMIT


# The producer's limit, set by hand below the record (the crash: refused at produce() time).
PRODUCER_LIMIT = {"confluent": "KAFKA_PRODUCER_MESSAGE_MAX_BYTES", "kafka-python": "KAFKA_PRODUCER_MAX_REQUEST_SIZE"}


@pytest.mark.parametrize("refused_by", ["dlq", "producer"])
@pytest.mark.parametrize(("client", "guarantee"), COMBINATIONS)
def test_a_dead_letter_refused_for_good_stops_only_its_partition(
    kafka_bootstrap: str, client: str, guarantee: str, refused_by: str
) -> None:
    """``dlq``: an existing DLQ of the broker's default size refuses it in the delivery report.
    ``producer``: a DLQ with room for it, but a producer limit set below the record refuses it when queued."""
    kit = kit_for(client, kafka_bootstrap)
    suffix = uuid.uuid4().hex[:8]
    if refused_by == "dlq":
        topics = Topics(input_topic(kit), kit.topic(4), kit.topic(4), f"poison-{suffix}")
        args: tuple[str, ...] = ()
        settings = {}
    else:
        topics = Topics(input_topic(kit), kit.topic(4), f"poison-dlq-{suffix}", f"poison-{suffix}")
        args = ("--ensure-topics",)
        settings = {PRODUCER_LIMIT[client]: "1500000"}
    produce(client, kafka_bootstrap, topics.input, 2_000)
    [big] = [r for r in kit.read_all(topics.input, 2_001, timeout_s=60) if r.value == BIG]

    service = Service(
        kafka_bootstrap, client, topics, *args, PROCESSING_GUARANTEE=guarantee, SHUTDOWN_TIMEOUT="2", **settings
    )
    deadline = time.monotonic() + 120
    while True:
        assert service.process.poll() is None, f"the service exited ({service.process.returncode}):\n{service.output()}"
        try:
            committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
        except KafkaException as error:  # the broker was busy answering: ask again
            assert time.monotonic() < deadline, f"cannot read the group's offsets: {error}\n{service.output()}"
            time.sleep(0.5)
            continue
        status, body = readiness(service.port)
        others_done = all(committed[p] == ends[p] for p in range(4) if p != big.partition)
        if status == 503 and "stopped at offset" in body.get("reason", "") and others_done:
            break
        assert time.monotonic() < deadline, (
            f"committed {committed} of {ends}, /readyz {status} {body}\n{service.output()}"
        )
        time.sleep(0.5)

    reason = body["reason"]
    assert f"{topics.input}[{big.partition}] stopped at offset {big.offset}" in reason
    if refused_by == "dlq":
        admin = kit.admin()
        try:
            dlq_limit = admin.max_message_bytes([topics.dlq])[topics.dlq]
        finally:
            admin.close()
        assert f"refused by {topics.dlq} (max.message.bytes {dlq_limit} bytes)" in reason
    else:
        assert "refused by the producer (it sends at most 1500000 bytes)" in reason
    assert committed[big.partition] == big.offset, "nothing committed past the record"
    assert re.search(_STALLED, metrics_text(service.port)) is not None
    assert float(_STALLED.findall(metrics_text(service.port))[0]) == 1

    service.signal(signal.SIGTERM)
    assert service.wait(60) == 0, service.output()
    log = service.output(tail=None)
    errors = [line for line in log.splitlines() if "ERROR" in line and "stopped at offset" in line]
    assert len(errors) == 1, errors  # once, then at most once a minute; this run was shorter
    assert str(len(BIG)) in errors[0] and "Remedy" in errors[0]
    assert "Traceback" not in log
    if refused_by == "producer":  # said once at start, naming both sizes
        [warning] = [line for line in log.splitlines() if "WARNING" in line and "producer sends at most" in line]
        assert "1500000" in warning and str(INPUT_LIMIT) in warning

    committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
    assert committed[big.partition] == big.offset, "not even on the way out"
    assert all(committed[p] == ends[p] for p in range(4) if p != big.partition)
    assert not [r for r in kit.read_all(topics.dlq, 0, timeout_s=10) if r.value == BIG]  # never skipped past
