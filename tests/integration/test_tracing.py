"""Tracing for real: the service, with each Kafka client, sends its spans over OTLP/HTTP to a receiver in the test,
and the output and dead-letter records carry the continued W3C trace context."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from application import dlq_headers
from application.messages import ConsumedRecord, header_value
from tests.contract.kits import AdapterKit, ConfluentKit, KafkaPythonKit
from tests.integration.harness import Service, Topics

pytestmark = pytest.mark.integration

GOOD = {"user_id": "u", "app_version": "2.3.0", "device_type": "iOS", "locale": "RU"}
PER_KIND = 5


class Receiver:
    """An OTLP/HTTP trace endpoint: decodes each export request with the official protobuf messages."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, str]] = []
        self.content_types: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.content_types.add(f"{self.path} {self.headers.get('Content-Type')}")
                for resource_spans in request.resource_spans:
                    receiver.resources.append({a.key: a.value.string_value for a in resource_spans.resource.attributes})
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def attributes(span: Span) -> dict[str, object]:
    found: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        found[attribute.key] = value.int_value if value.WhichOneof("value") == "int_value" else value.string_value
    return found


def traceparent(record: ConsumedRecord) -> tuple[str, str]:
    value = header_value(record.headers, "traceparent")
    assert value is not None, f"no traceparent on {record.topic}@{record.offset}"
    _, trace_id, span_id, flags = value.decode().split("-")
    assert int(flags, 16) & 1, "sampled"
    return trace_id, span_id


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_spans_reach_an_otlp_receiver_and_records_carry_the_continued_trace(
    kafka_bootstrap: str, receiver: Receiver, client: str, guarantee: str
) -> None:
    kit: AdapterKit = ConfluentKit(kafka_bootstrap) if client == "confluent" else KafkaPythonKit(kafka_bootstrap)
    topics = Topics.create(kit, partitions=2)

    # Four kinds of record, PER_KIND each: valid or not, with a sampled traceparent of their own or without.
    parents: dict[bytes, tuple[str, str]] = {}  # value -> (trace id, parent span id) sent with it
    sink = kit.sink()
    for n in range(PER_KIND * 4):
        valid, traced = n % 2 == 0, n % 4 < 2
        value = json.dumps({**GOOD, "user_id": f"u-{n}"}).encode() if valid else f"{{broken {n}".encode()
        headers: list[tuple[str, bytes]] = [("origin", b"tracing-test")]
        if traced:
            trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
            parents[value] = (trace_id, span_id)
            headers.append(("traceparent", f"00-{trace_id}-{span_id}-01".encode()))
        sink.publish(topics.input, f"k-{n}".encode(), value, headers, lambda error: None)
    assert sink.flush(30)
    sink.close()

    # Stopped as Kubernetes stops a pod: SIGTERM once the records are consumed; its graceful stop flushes the spans.
    otel = {k: "" for k in os.environ if k.startswith("OTEL_")}  # nothing from the caller's environment
    service = Service(
        kafka_bootstrap, client, topics,
        **otel,
        PROCESSING_GUARANTEE=guarantee,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_SERVICE_NAME="logins-under-test",
        OTEL_TRACES_SAMPLER="parentbased_always_on",
        # No scheduled export during the run: every span the receiver gets was flushed by the stop.
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )  # fmt: skip
    service.wait_consumed(PER_KIND * 4)
    assert not receiver.spans
    service.signal(signal.SIGTERM)
    assert service.wait(60) == 0, service.output()
    log = service.output(tail=None)
    assert "Traceback" not in log and "tracing:" not in log, log[-3000:]

    # The spans were flushed on the way out (fewer than a batch: only the stop sends them), to /v1/traces as OTLP.
    assert receiver.content_types == {"/v1/traces application/x-protobuf"}
    assert {resource["service.name"] for resource in receiver.resources} == {"logins-under-test"}
    spans = {(span.trace_id.hex(), span.span_id.hex()): span for span in receiver.spans}
    assert len(spans) >= PER_KIND * 4

    outputs = kit.read_all(topics.output, PER_KIND * 2)
    letters = kit.read_all(topics.dlq, PER_KIND * 2)
    assert len(outputs) == len(letters) == PER_KIND * 2
    for record, outcome in [(r, "processed") for r in outputs] + [(r, "dead_lettered") for r in letters]:
        trace_id, span_id = traceparent(record)
        span = spans[(trace_id, span_id)]  # the record's parent is a span the receiver got
        attrs = attributes(span)
        assert attrs["messaging.destination.name"] == topics.input
        assert attrs["pipeline.outcome"] == outcome
        assert attrs["messaging.consumer.group.name"] == topics.group
        assert isinstance(attrs["messaging.kafka.offset"], int)
        assert attrs["messaging.destination.partition.id"] in ("0", "1")
        if outcome == "dead_lettered":
            assert attrs["pipeline.dlq.reason"] == "malformed_json"
            assert header_value(record.headers, dlq_headers.REASON) == b"malformed_json"
            assert (
                int(header_value(record.headers, dlq_headers.SOURCE_OFFSET) or b"-1") == attrs["messaging.kafka.offset"]
            )
        assert header_value(record.headers, "origin") == b"tracing-test"
        if _input_value(record) in parents:  # continued: same trace, its span the child of the one sent
            assert (trace_id, span.parent_span_id.hex()) == parents[_input_value(record)]
        else:  # a fresh trace: the processing span is its root
            assert span.parent_span_id == b"" and trace_id not in {t for t, _ in parents.values()}
    continued = [r for r in outputs + letters if _input_value(r) in parents]
    assert len(continued) == PER_KIND * 2


def _input_value(record: ConsumedRecord) -> bytes:
    """The input value an output came from: outputs are re-encoded, so match by user id."""
    if record.value and record.value.startswith(b"{broken"):
        return record.value
    user_id = json.loads(record.value or b"")["user_id"]
    return json.dumps({**GOOD, "user_id": user_id}).encode()
