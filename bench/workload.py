"""The Kafka side of the benchmark: the broker, topics, the preloaded workload, and every measurement read.

Everything here talks to the broker with confluent-kafka from the project's own
virtual environment. Topic and group names are unique per harness run
(``bench-<run id>-...``), so an already running, shared broker can be used
without touching anything that is not ours.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from adapters.generator import LoginGenerator

REPO = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
LOCAL_PORT = 29092
LOCAL_DIR = REPO / ".cache" / "kafka" / "bench-data"
PARTITIONS = 4
ADMIN_TIMEOUT_S = 30.0

# The preload and the offered load are written uncompressed, so that decompressing the input (pure-Python
# glue around the codec in kafka-python, C in librdkafka) does not weigh on one client more than the other.
_LOAD_PRODUCER = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "none",
    "queue.buffering.max.messages": 1_000_000,
    "batch.num.messages": 10_000,
}


# The harness's own clients log only errors (stderr); its failures surface as exceptions anyway.
QUIET = {"log_level": 3}


class BenchError(RuntimeError):
    """The harness cannot go on (broker unavailable, topic creation refused, ...)."""


# -- broker ---------------------------------------------------------------------------------------------


@dataclass
class Broker:
    bootstrap: str
    kafka_version: str
    local: bool
    log_path: Path | None = None

    def stop(self) -> None:
        if not self.local:
            return
        subprocess.run(
            [str(KAFKA_LOCAL), "stop"], env=_kafka_local_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=120, check=False,
        )  # fmt: skip


def _kafka_local_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_LOCAL_PORT"] = str(LOCAL_PORT)
    env["KAFKA_LOCAL_DIR"] = str(LOCAL_DIR)
    env.pop("KAFKA_LOCAL_CONTROLLER_PORT", None)
    return env


def _local_kafka_version() -> str:
    version = os.environ.get("KAFKA_LOCAL_VERSION")
    if version:
        return version
    for line in KAFKA_LOCAL.read_text().splitlines():
        if line.startswith("KAFKA_VERSION="):
            # KAFKA_VERSION="${KAFKA_LOCAL_VERSION:-4.4.0}"
            return line.split(":-", 1)[-1].rstrip('}"')
    return "unknown"


def _probe_kafka_version(bootstrap: str) -> str:
    """An external broker's version as kafka-python infers it from the API versions it offers."""
    explicit = os.environ.get("BENCH_KAFKA_VERSION")
    if explicit:
        return explicit
    try:
        from kafka import KafkaAdminClient  # noqa: PLC0415 - only needed for an external broker

        client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            broker_id = client.describe_cluster()["brokers"][0]["broker_id"]
            version = client.get_broker_version_data(broker_id).broker_version_str
        finally:
            client.close()
    except Exception as error:  # noqa: BLE001 - a missing version must not stop the benchmark
        return f"unknown ({type(error).__name__})"
    return f">= {version} (inferred from its API versions)"


def open_broker(log_dir: Path) -> Broker:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a fresh ``scripts/kafka-local`` broker on 127.0.0.1:29092."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return Broker(external, _probe_kafka_version(external), local=False)
    log_path = log_dir / "kafka-local.log"
    with log_path.open("w") as log:
        done = subprocess.run(
            [str(KAFKA_LOCAL), "start", "--fresh"], env=_kafka_local_env(), stdout=subprocess.PIPE,
            stderr=log, text=True, timeout=600, check=False,
        )  # fmt: skip
    broker = Broker(f"127.0.0.1:{LOCAL_PORT}", _local_kafka_version(), local=True, log_path=log_path)
    if done.returncode != 0:
        broker.stop()
        tail = log_path.read_text()[-3000:]
        raise BenchError(f"scripts/kafka-local start failed (exit {done.returncode}):\n{tail}")
    lines = done.stdout.strip().splitlines()
    if lines:
        broker.bootstrap = lines[-1].strip()
    return broker


# -- names, topics, groups ------------------------------------------------------------------------------


@dataclass
class Names:
    """Unique topic and group names for one harness run."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def topic(self, label: str) -> str:
        return f"bench-{self.run_id}-{label}"

    def group(self, label: str) -> str:
        return f"bench-{self.run_id}-{label}-{uuid.uuid4().hex[:6]}"


@dataclass
class Lane:
    """One contender run's topics and group."""

    input: str
    output: str
    dlq: str
    group: str


def _plain(config: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in config.items() if value is not None}


class Kafka:
    """Admin operations and reads, all on topics this run created."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
        self._reader: Consumer | None = None
        self.created: set[str] = set()

    # topics and groups

    def create_topics(self, names: Sequence[str], *, log_append_time: bool, partitions: int = PARTITIONS) -> None:
        config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=-1, config=config) for name in names],
            operation_timeout=ADMIN_TIMEOUT_S,
            request_timeout=ADMIN_TIMEOUT_S,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as error:
                raise BenchError(f"cannot create topic {name}: {error.args[0].str()}") from None
            self.created.add(name)
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        for name in names:  # wait until the metadata shows every partition with a leader
            while True:
                topics = self.admin.list_topics(name, timeout=10).topics
                meta = topics.get(name)
                if (
                    meta is not None
                    and meta.error is None
                    and len(meta.partitions) == partitions
                    and all(p.leader >= 0 for p in meta.partitions.values())
                ):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"topic {name} did not become available")
                time.sleep(0.1)

    def delete_topics(self, names: Iterable[str]) -> None:
        names = [name for name in names if name in self.created]
        if not names:
            return
        self.created.difference_update(names)
        for future in self.admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S).values():
            with contextlib.suppress(KafkaException):
                future.result()

    def delete_group(self, group: str) -> None:
        for future in self.admin.delete_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S).values():
            with contextlib.suppress(KafkaException):
                future.result()

    def assigned_partitions(self, group: str, topic: str) -> int:
        """How many of ``topic``'s partitions the group's members hold, counted only once the group is Stable."""
        try:
            description = self.admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        except KafkaException:
            return 0
        if description.state != ConsumerGroupState.STABLE:
            return 0
        held = set()
        for member in description.members:
            if member.assignment is None:
                continue
            for partition in member.assignment.topic_partitions:
                if partition.topic == topic:
                    held.add(partition.partition)
        return len(held)

    # reads

    def _consumer(self, **extra: object) -> Consumer:
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 8_388_608,
            **QUIET,
            **extra,
        }
        return Consumer(_plain(config))

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise BenchError(f"topic {topic} is not available")
        return sorted(meta.partitions)

    def watermarks(self, topic: str) -> list[tuple[int, int]]:
        if self._reader is None:
            self._reader = self._consumer()
        return [
            self._reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in self.partitions(topic)
        ]

    def end_offsets(self, topic: str) -> list[int]:
        return [high for _, high in self.watermarks(topic)]

    def scan(self, topics: Sequence[str], *, read_committed: bool) -> Iterator[list[Message]]:
        """Every record of ``topics`` from the beginning to the end, in batches of confluent Messages.

        With read_committed, transaction markers and aborted records are skipped, so the records seen
        are exactly those a read_committed consumer of the output would see.
        """
        consumer = self._consumer(
            **{
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "enable.partition.eof": True,
            }
        )
        try:
            assignment = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in self.partitions(t)]
            remaining = {(tp.topic, tp.partition) for tp in assignment}
            consumer.assign(assignment)
            idle_deadline = time.monotonic() + 60
            while remaining:
                batch = consumer.consume(10_000, timeout=1.0)
                if not batch:
                    if time.monotonic() > idle_deadline:
                        raise BenchError(f"reading {', '.join(topics)} stalled; partitions left: {sorted(remaining)}")
                    continue
                idle_deadline = time.monotonic() + 60
                records = []
                for message in batch:
                    error = message.error()
                    if error is None:
                        records.append(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((message.topic(), message.partition()))
                    else:
                        raise BenchError(f"reading {message.topic()}: {error.str()}")
                if records:
                    yield records
        finally:
            consumer.close()

    def count(self, topic: str, *, transactional: bool) -> int:
        """Records a read_committed consumer sees; for a non-transactional topic the offsets say it directly."""
        if not transactional:
            return sum(high - low for low, high in self.watermarks(topic))
        return sum(len(batch) for batch in self.scan([topic], read_committed=True))

    def first_append_ms(self, topics: Sequence[str]) -> int | None:
        """The broker's LogAppendTime of the earliest record across ``topics`` (offset 0 of each partition)."""
        wanted: list[TopicPartition] = []
        for topic in topics:
            for partition, (low, high) in zip(self.partitions(topic), self.watermarks(topic), strict=True):
                if high > low:
                    wanted.append(TopicPartition(topic, partition, low))
        if not wanted:
            return None
        consumer = self._consumer(**{"isolation.level": "read_uncommitted", "fetch.max.bytes": 1_048_576})
        first: dict[tuple[str, int], int] = {}
        try:
            consumer.assign(wanted)
            deadline = time.monotonic() + 30
            while len(first) < len(wanted) and time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.5):
                    if message.error() is not None:
                        continue
                    key = (cast(str, message.topic()), cast(int, message.partition()))
                    if key in first:
                        continue
                    kind, stamp = message.timestamp()
                    if kind != TIMESTAMP_LOG_APPEND_TIME:
                        raise BenchError(f"{message.topic()} is not stamped with LogAppendTime")
                    first[key] = stamp
                    consumer.pause([TopicPartition(*key)])
        finally:
            consumer.close()
        if len(first) < len(wanted):
            raise BenchError(f"could not read the first record of every partition of {', '.join(topics)}")
        return min(first.values())

    def last_append_ms(self, topics: Sequence[str]) -> int | None:
        """The broker's LogAppendTime of the latest record across ``topics`` (the tail of each partition).

        Read uncommitted, from a few offsets before each partition's end: a transactional topic ends with
        a commit marker, which is not a record, so the tail is widened until it holds one.
        """
        latest: int | None = None
        for window in (64, 4096, None):
            wanted: list[TopicPartition] = []
            for topic in topics:
                for partition, (low, high) in zip(self.partitions(topic), self.watermarks(topic), strict=True):
                    if high > low:
                        start = low if window is None else max(low, high - window)
                        wanted.append(TopicPartition(topic, partition, start))
            if not wanted:
                return None
            consumer = self._consumer(
                **{"isolation.level": "read_uncommitted", "fetch.max.bytes": 1_048_576, "enable.partition.eof": True}
            )
            last: dict[tuple[str, int], int] = {}
            remaining = {(tp.topic, tp.partition) for tp in wanted}
            try:
                consumer.assign(wanted)
                deadline = time.monotonic() + 30
                while remaining and time.monotonic() < deadline:
                    for message in consumer.consume(1000, timeout=0.5):
                        key = (cast(str, message.topic()), cast(int, message.partition()))
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                remaining.discard(key)
                            continue
                        kind, stamp = message.timestamp()
                        if kind != TIMESTAMP_LOG_APPEND_TIME:
                            raise BenchError(f"{message.topic()} is not stamped with LogAppendTime")
                        last[key] = max(last.get(key, stamp), stamp)
            finally:
                consumer.close()
            if remaining:
                raise BenchError(f"could not read the tail of every partition of {', '.join(topics)}")
            if len(last) == len(wanted):
                return max(last.values())
            latest = max(last.values(), default=None)
        return latest

    def cleanup(self) -> None:
        """Delete every topic this run created and has not deleted yet (on a shared broker)."""
        self.delete_topics(sorted(self.created))

    def close(self) -> None:
        """Release every client before the broker goes away (librdkafka would log reconnect attempts)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        del self.admin
        gc.collect()


class CommitWatch:
    """The group's committed offsets, read the way any outsider can: a consumer that never subscribes."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: Sequence[int]) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **QUIET}
        )  # fmt: skip
        self._partitions = [TopicPartition(topic, p) for p in partitions]

    def committed(self) -> list[int]:
        """Committed offset per partition (0 where nothing is committed yet)."""
        try:
            found = self._consumer.committed(self._partitions, timeout=5)
        except KafkaException:
            return [0] * len(self._partitions)
        return [max(tp.offset, 0) for tp in found]

    def close(self) -> None:
        self._consumer.close()


# -- the preloaded workload ----------------------------------------------------------------------------


@dataclass
class Preloaded:
    topic: str
    records: int
    dead_letters: int  # how many the domain must reject (the generator's ground truth)
    seconds: float
    small_topic: str | None = None  # the first ``small_records`` records again, for the memory comparison
    small_records: int = 0
    small_dead_letters: int = 0


def _produce(producer: Producer, topic: str, value: bytes, partition: int, timestamp: int = 0) -> None:
    while True:
        try:
            producer.produce(topic, value, None, partition=partition, timestamp=timestamp)
            return
        except BufferError:
            producer.poll(0.05)


def _check_flush(producer: Producer, topic: str, failures: list[str]) -> None:
    if producer.flush(300) != 0 or failures:
        raise BenchError(f"preloading {topic} failed: {failures[:3] or 'flush timed out'}")


def preload(
    kafka: Kafka, topic: str, records: int, seed: int, small_topic: str | None = None, small_records: int = 0
) -> Preloaded:
    """Generate ``records`` login records and write them, round robin over the partitions, before any timing."""
    topics = [topic] + ([small_topic] if small_topic else [])
    kafka.create_topics(topics, log_append_time=False)
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error.str())

    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "linger.ms": 20, "on_delivery": delivered, **_LOAD_PRODUCER, **QUIET}
    )
    started = time.monotonic()
    dead = small_dead = 0
    for index, record in enumerate(LoginGenerator(seed=seed).records(records)):
        partition = index % PARTITIONS
        _produce(producer, topic, record.value, partition)
        rejected = record.expected_reason is not None
        dead += rejected
        if small_topic and index < small_records:
            _produce(producer, small_topic, record.value, partition)
            small_dead += rejected
        if index % 1000 == 0:
            producer.poll(0)
    _check_flush(producer, topic, failures)
    ends = kafka.end_offsets(topic)
    if sum(ends) != records:
        raise BenchError(f"preloaded {topic} holds {sum(ends)} records, expected {records}")
    return Preloaded(
        topic, records, dead, time.monotonic() - started,
        small_topic, small_records if small_topic else 0, small_dead,
    )  # fmt: skip


# -- the offered load for latency ----------------------------------------------------------------------


@dataclass
class OfferedLoad:
    """Records produced at a fixed rate, with their CreateTime kept to match outputs against."""

    by_value: dict[bytes, int] = field(default_factory=dict)
    by_user: dict[str, int] = field(default_factory=dict)
    produced: int = 0
    achieved_rate: float = 0.0


class LoadProducer:
    """Produces the latency test's input: first a warm-up, then a fixed rate.

    One producer serves both, so that its connection, metadata and producer id are in place before
    the first timed record (otherwise the first records would wait for them, and count it as latency).
    """

    def __init__(self, kafka: Kafka, topic: str) -> None:
        self.topic = topic
        self._failures: list[str] = []
        self._producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "linger.ms": 0,
                "on_delivery": self._delivered,
                **_LOAD_PRODUCER,
                **QUIET,
            }
        )

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._failures.append(error.str())

    def warm_up(self, seed: int) -> None:
        """One record per partition, acknowledged before returning."""
        for partition, record in enumerate(LoginGenerator(seed=seed).records(PARTITIONS)):
            _produce(self._producer, self.topic, record.value, partition, int(time.time() * 1000))
        _check_flush(self._producer, self.topic, self._failures)

    def offer(self, rate: float, seconds: float, seed: int) -> OfferedLoad:
        """Produce ``rate`` records/s for ``seconds``, smoothly (every millisecond, whatever is due).

        Records are generated beforehand so that pacing costs only the produce call. Each carries an
        explicit CreateTime taken at the moment it is handed to the client.
        """
        count = int(rate * seconds)
        generated = list(LoginGenerator(seed=seed).records(count))
        load = OfferedLoad()
        producer = self._producer
        start = time.monotonic()
        sent = 0
        while sent < count:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                record = generated[sent]
                stamp = int(time.time() * 1000)
                _produce(producer, self.topic, record.value, sent % PARTITIONS, stamp)
                load.by_value[record.value] = stamp
                if record.expected_reason is None:
                    load.by_user[record.user_id] = stamp
                sent += 1
            producer.poll(0)
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.001))
        elapsed = time.monotonic() - start
        _check_flush(producer, self.topic, self._failures)
        load.produced = sent
        load.achieved_rate = sent / elapsed if elapsed > 0 else 0.0
        return load


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    matched: int
    unmatched: int


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return float(ordered[rank])


def measure_latency(kafka: Kafka, load: OfferedLoad, output: str, dlq: str) -> Latency:
    """Per record: the output's LogAppendTime minus the input's CreateTime.

    Dead letters and unparsed copies are matched by value, processed records by ``user_id``
    (their value is transformed). A record seen twice counts at its first appearance.
    """
    first: dict[bytes | str, int] = {}
    unmatched = 0
    for batch in kafka.scan([output, dlq], read_committed=True):
        for message in batch:
            value = message.value() or b""
            _, appended = message.timestamp()
            key: bytes | str = value
            created = load.by_value.get(value)
            if created is None:
                try:
                    user = json.loads(value).get("user_id")
                except (ValueError, AttributeError):
                    user = None
                if isinstance(user, str):
                    key = user
                    created = load.by_user.get(user)
            if created is None:
                unmatched += 1  # e.g. the warm-up records
                continue
            latency = appended - created
            if key not in first or latency < first[key]:
                first[key] = latency
    latencies = sorted(first.values())
    return Latency(
        _percentile(latencies, 0.5), _percentile(latencies, 0.99), float(latencies[-1]) if latencies else float("nan"),
        len(latencies), unmatched,
    )  # fmt: skip
