"""OpenTelemetry tracing, configured only by the standard ``OTEL_*`` environment variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, comma-separated). The SDK reads the
rest itself: ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (resource), ``OTEL_TRACES_SAMPLER``/``_ARG``
(sampler), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, TLS, timeout, compression), ``OTEL_BSP_*`` (batching),
``OTEL_PROPAGATORS`` (the trace-context headers: W3C ``traceparent``/``tracestate`` and ``baggage`` by default).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from application.errors import InvalidConfiguration
from application.logs import ThrottledWarning
from application.messages import ConsumedRecord, Headers
from application.ports import RecordSpan, Tracer

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "user-login-pipeline"
EXPORTERS = ("otlp", "console")
SAMPLERS = (
    "always_on", "always_off", "traceidratio",
    "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
)  # fmt: skip
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
# The OTLP/HTTP exporter logs every failed or retried batch here; the tracer reports them itself, throttled.
_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"

OUTCOME = "pipeline.outcome"
DLQ_REASON = "pipeline.dlq.reason"
PROCESSED = "processed"
DEAD_LETTERED = "dead_lettered"


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Off by default: on only when ``OTEL_TRACES_EXPORTER`` names an exporter and the SDK is not disabled.

    (The OpenTelemetry spec's default exporter is ``otlp``; a service that sends spans nobody asked for, to a
    collector that may not exist, is not a good default, so here an unset variable means off.)
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(_exporter_names(environ))


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    return [] if names == ["none"] else names


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise InvalidConfiguration, naming the variable, for a value the SDK would only warn about and ignore."""
    names = _exporter_names(environ)
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise InvalidConfiguration(
            f"OTEL_TRACES_EXPORTER={environ.get('OTEL_TRACES_EXPORTER')!r}: unsupported exporter {unknown[0]!r}; "
            f"use {', '.join(EXPORTERS)} (comma-separated) or none"
        )
    if "otlp" in names:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(variable, "").strip()
            if protocol:
                if protocol != "http/protobuf":
                    raise InvalidConfiguration(
                        f"{variable}={protocol!r}: only http/protobuf is supported (OTLP/HTTP, port 4318)"
                    )
                break
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        raise InvalidConfiguration(f"OTEL_TRACES_SAMPLER={sampler!r}: use one of {', '.join(SAMPLERS)}")
    if sampler in _RATIO_SAMPLERS and "OTEL_TRACES_SAMPLER_ARG" in environ:
        argument = environ["OTEL_TRACES_SAMPLER_ARG"]
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise InvalidConfiguration(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: a ratio between 0 and 1 is expected")


def tracer_from_environment(consumer_group: str = "", environ: Mapping[str, str] | None = None) -> Tracer:
    """The no-op Tracer when tracing is off, an OpenTelemetryTracer set up from the ``OTEL_*`` variables otherwise.

    The SDK reads the variables from the process environment; ``environ`` (for tests) must be that environment.
    """
    environ = os.environ if environ is None else environ
    if not tracing_enabled(environ):
        return Tracer()
    check_environment(environ)
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if "OTEL_SERVICE_NAME" not in environ and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    exporters: list[SpanExporter] = []
    for name in _exporter_names(environ):
        if name == "otlp":
            # Imported only when asked for: it brings requests and protobuf, which tracing off does not need.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

            exporters.append(ReportingExporter(OTLPSpanExporter()))
        else:
            exporters.append(ReportingExporter(ConsoleSpanExporter()))
    return OpenTelemetryTracer(TracerProvider(resource=resource), exporters, consumer_group=consumer_group)


class ReportingExporter(SpanExporter):
    """Wraps an exporter so that its failures never reach the pipeline and are logged as one throttled line.

    The OTLP exporter already retries a failed batch within its timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``);
    a batch it gives up on is dropped: spans are worth less than records, and the records go on regardless.
    """

    def __init__(self, inner: SpanExporter, *, interval_s: float = 60.0) -> None:
        self.inner = inner
        self._failed = ThrottledWarning(log, interval_s)
        self._cause = _Cause.install()
        self.exported = 0
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._cause.text = ""
        try:
            result = self.inner.export(spans)
        except Exception as error:  # noqa: BLE001 - an exporter's bug must not stop the batch processor's thread
            result, self._cause.text = SpanExportResult.FAILURE, f"{type(error).__name__}: {error}"
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.dropped += len(spans)
            self._failed(
                "tracing: %d span(s) could not be exported and were dropped (%s); records are not affected; "
                "check OTEL_EXPORTER_OTLP_ENDPOINT and that the collector is up",
                len(spans), self._cause.text or "no reason given",
            )  # fmt: skip
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Cause(logging.Filter):
    """Keeps the OTLP exporter's first complaint about a batch (its cause) instead of letting it through."""

    _installed: _Cause | None = None

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    @classmethod
    def install(cls) -> _Cause:
        if cls._installed is None:
            cls._installed = cls()
            logging.getLogger(_EXPORTER_LOGGER).addFilter(cls._installed)
        return cls._installed

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.text:
            self.text = record.getMessage()
        return False


class _HeaderGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [value.decode("latin-1") for name, value in carrier if name == key and value is not None]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeaderGetter()


class _RecordSpan:
    """Made when the record's processing starts; the SDK span itself only once its outcome is known, with every
    attribute at once and the start time taken here (one attribute validation pass per span, not two)."""

    __slots__ = ("_record", "_started_ns", "_tracer")

    def __init__(self, tracer: OpenTelemetryTracer, record: ConsumedRecord) -> None:
        self._tracer = tracer
        self._record = record
        self._started_ns = time.time_ns()

    def end(self, reason: str | None, error: str | None = None) -> list[tuple[str, bytes]]:
        return self._tracer.record(self._record, self._started_ns, reason, error)


class OpenTelemetryTracer(Tracer):
    """A CONSUMER span per record, ``process <topic>``, with the messaging semantic conventions' attributes.

    Its parent is the trace context in the record's headers (as ``OTEL_PROPAGATORS`` reads them, W3C
    ``traceparent`` by default); a record without one starts a trace if the sampler says so.
    """

    enabled = True

    def __init__(
        self, provider: TracerProvider, exporters: Sequence[SpanExporter], *, consumer_group: str = ""
    ) -> None:
        self._provider = provider
        self.exporters = list(exporters)
        for exporter in self.exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = provider.get_tracer("user-login-pipeline")
        self._propagator = propagate.get_global_textmap()
        self.fields = frozenset(self._propagator.fields)
        self._group = consumer_group
        self._shut = False

    @property
    def resource(self) -> Resource:
        return self._provider.resource

    def start(self, record: ConsumedRecord) -> RecordSpan:
        return _RecordSpan(self, record)

    def record(
        self, record: ConsumedRecord, started_ns: int, reason: str | None, error: str | None
    ) -> list[tuple[str, bytes]]:
        """The span for one record's processing, started at ``started_ns`` and ended now; its context's headers."""
        headers = record.headers
        parent = self._propagator.extract(headers, getter=_GETTER) if headers else None
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        if self._group:
            attributes["messaging.consumer.group.name"] = self._group
        if reason is None:
            attributes[OUTCOME] = PROCESSED
        else:
            attributes[OUTCOME] = DEAD_LETTERED
            attributes[DLQ_REASON] = reason
        span = self._tracer.start_span(
            f"process {record.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
            start_time=started_ns,
        )  # fmt: skip
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        return [(name, value.encode()) for name, value in carrier.items()]

    def shutdown(self, timeout_s: float) -> None:
        """Export what is buffered, for at most ``timeout_s``; then give up on the rest (a collector that is down)."""
        if self._shut:
            return
        self._shut = True
        done = threading.Thread(target=self._provider.shutdown, name="tracing-shutdown", daemon=True)
        done.start()
        done.join(timeout_s)
        if done.is_alive():
            for exporter in self.exporters:
                exporter.shutdown()  # stops the OTLP exporter's retries; its thread ends soon after
            log.warning("tracing: the last spans could not be exported within %.0f s and were dropped", timeout_s)
