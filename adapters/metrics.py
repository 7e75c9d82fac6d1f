"""Prometheus metrics behind the application's Metrics port.

The pipeline reports in batches, so each record costs no lock or label lookup;
a registry per instance keeps tests and multiple pipelines independent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from application.messages import TopicPartition
from application.ports import Metrics

PREFIX = "pipeline"
METRIC_NAMES = (
    "pipeline_records_consumed_total",
    "pipeline_records_processed_total",
    "pipeline_records_dead_lettered_total",
    "pipeline_publish_retries_total",
    "pipeline_offset_commits_total",
    "pipeline_batch_duration_seconds",
    "pipeline_record_processing_seconds",
    "pipeline_end_to_end_latency_seconds",
    "pipeline_consumer_lag",
    "pipeline_records_in_flight",
    "pipeline_paused_partitions",
    "pipeline_stalled_partitions",
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PER_RECORD_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)


class PrometheusMetrics(Metrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._consumed = Counter(f"{PREFIX}_records_consumed", "Records read from the input topic", registry=r)
        self._processed = Counter(f"{PREFIX}_records_processed", "Records acknowledged on the output topic", registry=r)
        self._dead_lettered = Counter(
            f"{PREFIX}_records_dead_lettered", "Records acknowledged on the DLQ, by reason", ["reason"], registry=r
        )
        self._retries = Counter(f"{PREFIX}_publish_retries", "Publish attempts retried after a failure", registry=r)
        self._commits = Counter(f"{PREFIX}_offset_commits", "Partition offsets committed", registry=r)
        self._batch = Histogram(f"{PREFIX}_batch_duration_seconds", "Time to process one polled batch", registry=r)
        per_record = "Mean processing time per record within each batch"
        self._per_record = Histogram(
            f"{PREFIX}_record_processing_seconds", per_record, buckets=_PER_RECORD_BUCKETS, registry=r
        )
        latency = "Input record timestamp to output acknowledgement (one sampled record per batch)"
        self._latency = Histogram(f"{PREFIX}_end_to_end_latency_seconds", latency, buckets=_LATENCY_BUCKETS, registry=r)
        self._lag = Gauge(
            f"{PREFIX}_consumer_lag", "Records behind the partition's end", ["topic", "partition"], registry=r
        )
        self._in_flight = Gauge(f"{PREFIX}_records_in_flight", "Consumed records not yet acknowledged", registry=r)
        self._paused = Gauge(f"{PREFIX}_paused_partitions", "Partitions paused by backpressure", registry=r)
        stalled = "Partitions stopped at a record whose dead letter the DLQ refuses for good"
        self._stalled = Gauge(f"{PREFIX}_stalled_partitions", stalled, registry=r)

    def consumed(self, count: int) -> None:
        self._consumed.inc(count)

    def processed(self, count: int) -> None:
        self._processed.inc(count)

    def dead_lettered(self, reason: str, count: int) -> None:
        self._dead_lettered.labels(reason).inc(count)

    def retried(self, count: int) -> None:
        self._retries.inc(count)

    def committed(self, count: int) -> None:
        self._commits.inc(count)

    def batch_processed(self, seconds: float, records: int) -> None:
        self._batch.observe(seconds)
        if records:
            self._per_record.observe(seconds / records)

    def end_to_end_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def paused_partitions(self, count: int) -> None:
        self._paused.set(count)

    def stalled_partitions(self, count: int) -> None:
        self._stalled.set(count)

    def consumer_lag(self, partition: TopicPartition, lag: int) -> None:
        self._lag.labels(partition.topic, str(partition.partition)).set(lag)
