"""Tracing: the W3C trace context continued through the pipeline, spans recorded by the SDK in memory."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from adapters import tracing
from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource, InMemoryTransactionalSink
from adapters.tracing import OpenTelemetryTracer, ReportingExporter, tracer_from_environment
from application import dlq_headers
from application.at_least_once import AtLeastOncePipeline
from application.errors import InvalidConfiguration
from application.exactly_once import ExactlyOncePipeline
from application.messages import header_value
from application.ports import Tracer
from application.retry import RetryPolicy
from application.routing import RecordRouter, TracingRouter, make_router
from application.settings import PipelineSettings
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
GOOD = json.dumps({"user_id": "u-1", "app_version": "2.3.0", "device_type": "iOS", "locale": "RU"}).encode()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SETTINGS = PipelineSettings(
    poll_timeout_s=0.01, commit_interval_s=0.0, retry=RetryPolicy(2, 0.001, 0.002), shutdown_timeout_s=2.0
)


def traceparent(trace_id: str = TRACE_ID, span_id: str = PARENT_ID, flags: str = "01") -> bytes:
    return f"00-{trace_id}-{span_id}-{flags}".encode()


def parse(value: bytes | None) -> tuple[str, str, str]:
    assert value is not None, "no traceparent header"
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00"
    return trace_id, span_id, flags


def span_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    context = span.get_span_context()
    parent = span.parent
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None else None,
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def make_tracer(exporter: SpanExporter, sampler: Any = None) -> OpenTelemetryTracer:
    provider = TracerProvider(sampler=sampler or ParentBased(ALWAYS_ON))
    return OpenTelemetryTracer(provider, [exporter], consumer_group="g")


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[OpenTelemetryTracer]:
    made = make_tracer(exporter)
    yield made
    made.shutdown(2.0)


def make_broker(partitions: int = 1) -> InMemoryBroker:
    broker = InMemoryBroker(default_partitions=partitions, clock=FakeClock())
    for topic in (IN, OUT, DLQ):
        broker.create_topic(topic, partitions)
    return broker


def run(broker: InMemoryBroker, tracer: Tracer, *, exactly_once: bool = False) -> None:
    if exactly_once:
        ExactlyOncePipeline(
            InMemorySource(broker, "g"), InMemoryTransactionalSink(broker), LoginEventProcessor(), SETTINGS,
            clock=broker.clock, tracer=tracer,
        ).run(idle_timeout_s=0.05)  # fmt: skip
    else:
        AtLeastOncePipeline(
            InMemorySource(broker, "g"), InMemorySink(broker), LoginEventProcessor(), SETTINGS,
            clock=broker.clock, tracer=tracer,
        ).run(idle_timeout_s=0.05)  # fmt: skip
    if isinstance(tracer, OpenTelemetryTracer):
        tracer.shutdown(2.0)  # the batch processor hands every span to the exporter


def finished(exporter: InMemorySpanExporter) -> dict[int, ReadableSpan]:
    """The finished spans by the offset they processed."""
    return {int(str(span.attributes["messaging.kafka.offset"])): span for span in exporter.get_finished_spans()}  # type: ignore[index]


# -- off by default --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}],
)
def test_tracing_is_off_unless_an_exporter_is_named(environ: dict[str, str]) -> None:
    tracer = tracer_from_environment(environ=environ)
    assert type(tracer) is Tracer and not tracer.enabled
    assert type(make_router(LoginEventProcessor(), SETTINGS, tracer)) is RecordRouter


def test_tracing_off_leaves_records_headers_as_they_were() -> None:
    broker = make_broker()
    broker.append(IN, b"k", GOOD, [("traceparent", traceparent())])
    run(broker, Tracer())
    [output] = broker.records(OUT)
    assert list(output.headers) == [("traceparent", traceparent())]


def test_the_container_wires_the_traced_router_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from entrypoints.config import load_settings
    from entrypoints.container import build_container

    settings = load_settings({"BROKER_CLIENT": "memory"}, environ={})
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert type(build_container(settings).pipeline()._router) is RecordRouter
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    container = build_container(settings)
    pipeline = container.pipeline()
    assert type(pipeline._router) is TracingRouter
    assert container.tracer() is container.tracer()  # one provider per process: one batch thread, one flush
    container.tracer().shutdown(1.0)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)
def test_a_bad_otel_value_is_one_clear_error_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidConfiguration, match=named):
        tracer_from_environment(environ=environ)


def test_the_service_name_comes_from_otel_service_name_else_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    default = tracer_from_environment()
    assert isinstance(default, OpenTelemetryTracer)
    assert default.resource.attributes["service.name"] == tracing.DEFAULT_SERVICE_NAME
    default.shutdown(1.0)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "logins-eu")
    named = tracer_from_environment()
    assert isinstance(named, OpenTelemetryTracer)
    assert named.resource.attributes["service.name"] == "logins-eu"
    named.shutdown(1.0)


# -- the trace context continued ------------------------------------------------------------------------


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_record_s_trace_is_continued_into_its_output_and_its_dead_letter(
    exporter: InMemorySpanExporter, tracer: OpenTelemetryTracer, exactly_once: bool
) -> None:
    broker = make_broker()
    broker.append(IN, b"k", GOOD, [("traceparent", traceparent()), ("tracestate", b"vendor=x"), ("other", b"1")])
    broker.append(IN, b"bad", b"{not json", [("traceparent", traceparent(span_id="00000000000000aa"))])
    run(broker, tracer, exactly_once=exactly_once)

    spans = finished(exporter)
    assert set(spans) == {0, 1}
    [output] = broker.records(OUT)
    trace_id, parent_id, flags = parse(header_value(output.headers, "traceparent"))
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert span_ids(spans[0]) == (TRACE_ID, parent_id, PARENT_ID)  # the output's parent: the processing span
    assert header_value(output.headers, "tracestate") == b"vendor=x"
    assert [name for name, _ in output.headers].count("traceparent") == 1
    assert header_value(output.headers, "other") == b"1"
    assert spans[0].name == f"process {IN}" and spans[0].kind is SpanKind.CONSUMER
    assert dict(spans[0].attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": IN,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
        "messaging.consumer.group.name": "g",
        tracing.OUTCOME: tracing.PROCESSED,
    }

    [letter] = broker.records(DLQ)
    trace_id, parent_id, _ = parse(header_value(letter.headers, "traceparent"))
    assert span_ids(spans[1]) == (TRACE_ID, parent_id, "00000000000000aa")
    assert header_value(letter.headers, dlq_headers.REASON) == b"malformed_json"
    attributes = spans[1].attributes or {}
    assert (attributes[tracing.OUTCOME], attributes[tracing.DLQ_REASON]) == (tracing.DEAD_LETTERED, "malformed_json")
    assert spans[1].status.status_code is StatusCode.UNSET  # bad input is the record's fault, not the service's


def test_a_record_without_a_trace_context_starts_a_trace_when_sampled(
    exporter: InMemorySpanExporter, tracer: OpenTelemetryTracer
) -> None:
    broker = make_broker()
    broker.append(IN, b"a", GOOD)
    broker.append(IN, b"b", GOOD, [("traceparent", b"garbage")])  # unreadable: as if there were none
    run(broker, tracer)
    spans = finished(exporter)
    outputs = {record.key: record for record in broker.records(OUT)}
    trace_ids = set()
    for offset, key in ((0, b"a"), (1, b"b")):
        trace_id, parent_id, flags = parse(header_value(outputs[key].headers, "traceparent"))
        assert span_ids(spans[offset]) == (trace_id, parent_id, None)  # a root span
        assert int(flags, 16) & 1  # sampled (W3C level 2 may add the random-trace-id flag)
        trace_ids.add(trace_id)
    assert len(trace_ids) == 2 and TRACE_ID not in trace_ids
    assert header_value(outputs[b"b"].headers, "traceparent") != b"garbage"


def test_unsampled_records_record_no_span_but_pass_the_trace_on(exporter: InMemorySpanExporter) -> None:
    tracer = make_tracer(exporter, ParentBased(ALWAYS_OFF))
    broker = make_broker()
    broker.append(IN, b"unsampled-parent", GOOD, [("traceparent", traceparent(flags="00"))])
    broker.append(IN, b"no-parent", GOOD)
    broker.append(IN, b"sampled-parent", GOOD, [("traceparent", traceparent(flags="01"))])
    run(broker, tracer)
    outputs = {record.key: record for record in broker.records(OUT)}
    trace_id, _, flags = parse(header_value(outputs[b"unsampled-parent"].headers, "traceparent"))
    assert (trace_id, flags) == (TRACE_ID, "00")
    assert not int(parse(header_value(outputs[b"no-parent"].headers, "traceparent"))[2], 16) & 1
    assert [span_ids(span)[0] for span in exporter.get_finished_spans()] == [TRACE_ID]  # the parent-sampled one


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_publish_failed_dead_letter_carries_its_own_span(
    exporter: InMemorySpanExporter, tracer: OpenTelemetryTracer, exactly_once: bool
) -> None:
    broker = make_broker()
    broker.append(IN, b"k", GOOD, [("traceparent", traceparent())])
    broker.fail_publishes(OUT, message="output topic unavailable")
    run(broker, tracer, exactly_once=exactly_once)

    [letter] = broker.records(DLQ)
    trace_id, parent_id, _ = parse(header_value(letter.headers, "traceparent"))
    assert trace_id == TRACE_ID
    spans = exporter.get_finished_spans()
    [failed] = [span for span in spans if (span.attributes or {}).get(tracing.DLQ_REASON) == "publish_failed"]
    assert span_ids(failed) == (TRACE_ID, parent_id, PARENT_ID)
    assert failed.status.status_code is StatusCode.ERROR
    assert "output topic unavailable" in (failed.status.description or "")
    assert all(span_ids(span)[2] == PARENT_ID for span in spans)  # every attempt is a child of the record's parent


# -- exporter failures and shutdown ------------------------------------------------------------------------


class _Failing(SpanExporter):
    def __init__(self, raises: bool) -> None:
        self.raises = raises
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.raises:
            raise RuntimeError("exporter bug")
        return SpanExportResult.FAILURE


@pytest.mark.parametrize("raises", [False, True])
def test_export_failures_never_reach_the_pipeline_and_are_logged_once(
    caplog: pytest.LogCaptureFixture, raises: bool
) -> None:
    inner = _Failing(raises)
    reporting = ReportingExporter(inner, interval_s=3600)
    tracer = make_tracer(reporting)
    broker = make_broker()
    for n in range(600):  # more than one batch (512)
        broker.append(IN, str(n).encode(), GOOD)
    with caplog.at_level(logging.WARNING, logger=tracing.__name__):
        run(broker, tracer)
    assert len(broker.records(OUT)) == 600  # every record went through
    assert inner.calls >= 2 and reporting.dropped == 600
    warnings = [r for r in caplog.records if r.name == tracing.__name__]
    assert len(warnings) == 1
    assert "could not be exported" in warnings[0].getMessage()
    assert ("exporter bug" in warnings[0].getMessage()) is raises


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_with_no_collector_the_pipeline_runs_and_shutdown_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    tracer = tracer_from_environment()
    assert isinstance(tracer, OpenTelemetryTracer)
    broker = make_broker()
    for n in range(20):
        broker.append(IN, str(n).encode(), GOOD)
    with caplog.at_level(logging.WARNING):
        AtLeastOncePipeline(
            InMemorySource(broker, "g"), InMemorySink(broker), LoginEventProcessor(), SETTINGS,
            clock=broker.clock, tracer=tracer,
        ).run(idle_timeout_s=0.05)  # fmt: skip
        started = time.monotonic()
        tracer.shutdown(1.0)
        assert time.monotonic() - started < 3.0  # not the exporter's 10 s of retries
    assert len(broker.records(OUT)) == 20
    ours = [r.getMessage() for r in caplog.records if r.name == tracing.__name__]
    assert ours and all("dropped" in message for message in ours)
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]  # folded into ours
