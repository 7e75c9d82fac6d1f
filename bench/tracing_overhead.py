"""What tracing costs: the per-record routing and the whole pipeline on the memory broker, off and on.

    .venv/bin/python -m bench.tracing_overhead [--records N] [--runs N]

"route" times ``RecordRouter.route`` (tracing off: the router the container wires without OTEL_TRACES_EXPORTER)
and ``TracingRouter.route`` at 100% sampling, over the same generated records (one in ten invalid, half of them
with a sampled ``traceparent``). "pipeline" runs the at-least-once pipeline on the in-memory broker end to end;
with tracing on, spans go through the SDK's batch processor either to an exporter that drops them (the cost
in the pipeline's own thread) or over OTLP/HTTP to a receiver in this process (the exporter's thread competes
for the interpreter too). Best of ``--runs``; records/s.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from adapters.generator import LoginGenerator
from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from adapters.tracing import OpenTelemetryTracer, ReportingExporter
from application.at_least_once import AtLeastOncePipeline
from application.messages import ConsumedRecord
from application.ports import Tracer
from application.routing import RecordRouter, make_router
from application.settings import PipelineSettings
from domain.processing import LoginEventProcessor

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"


def _records(count: int) -> list[ConsumedRecord]:
    records = []
    for offset, generated in enumerate(LoginGenerator(seed=3).records(count)):
        headers: list[tuple[str, bytes]] = []
        if offset % 2:
            headers.append(("traceparent", f"00-{offset:032x}-{offset + 1:016x}-01".encode()))
        records.append(ConsumedRecord(IN, 0, offset, generated.key, generated.value, headers))
    return records


def _best(runs: int, work: Callable[[], float]) -> float:
    return max(work() for _ in range(runs))


def _route_rate(router: RecordRouter, records: Sequence[ConsumedRecord]) -> float:
    route = router.route
    started = time.perf_counter()
    for record in records:
        route(record, "2026-01-01T00:00:00Z")
    return len(records) / (time.perf_counter() - started)


def _pipeline_rate(tracer: Tracer, count: int) -> float:
    broker = InMemoryBroker(default_partitions=4)
    for topic in (IN, OUT, DLQ):
        broker.create_topic(topic, 4)
    for generated in LoginGenerator(seed=3).records(count):
        broker.append(IN, generated.key, generated.value)
    pipeline = AtLeastOncePipeline(
        InMemorySource(broker, "bench"), InMemorySink(broker), LoginEventProcessor(), PipelineSettings(), tracer=tracer
    )
    started = time.perf_counter()
    stats = pipeline.run(max_messages=count, idle_timeout_s=1.0)
    elapsed = time.perf_counter() - started
    assert stats.consumed == count
    return count / elapsed


class _Receiver:
    def __init__(self) -> None:
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


class _Drop(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _tracer(exporter: str, receiver: _Receiver | None = None) -> OpenTelemetryTracer:
    inner: SpanExporter = (
        _Drop() if exporter == "drop" else OTLPSpanExporter(endpoint=receiver.endpoint if receiver else None)
    )
    return OpenTelemetryTracer(TracerProvider(sampler=ALWAYS_ON), [ReportingExporter(inner)], consumer_group="bench")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    records = _records(args.records)
    processor, settings = LoginEventProcessor(), PipelineSettings()
    results: dict[str, float] = {}

    results["route, tracing off"] = _best(
        args.runs, lambda: _route_rate(make_router(processor, settings, Tracer()), records)
    )
    dropping = _tracer("drop")
    results["route, tracing on (100%, spans dropped)"] = _best(
        args.runs, lambda: _route_rate(make_router(processor, settings, dropping), records)
    )
    dropping.shutdown(5.0)

    results["pipeline, tracing off"] = _best(args.runs, lambda: _pipeline_rate(Tracer(), args.records))
    for name in ("drop", "otlp"):
        receiver = _Receiver() if name == "otlp" else None
        label = "spans dropped" if name == "drop" else "OTLP/HTTP to a local receiver"

        def traced(name: str = name, receiver: _Receiver | None = receiver) -> float:
            tracer = _tracer(name, receiver)
            try:
                return _pipeline_rate(tracer, args.records)
            finally:
                tracer.shutdown(10.0)

        results[f"pipeline, tracing on (100%, {label})"] = _best(args.runs, traced)
    for name, rate in results.items():
        print(f"{name:60s} {rate:>10,.0f} records/s")
    print(json.dumps({name: round(rate) for name, rate in results.items()}))


if __name__ == "__main__":
    main()
