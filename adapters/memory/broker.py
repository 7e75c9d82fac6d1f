"""Topics, partitions, offsets and consumer groups held in memory.

It models what the pipeline relies on in Kafka: per-partition ordering and
offsets, keyed partitioning, headers, committed offsets per group, and an
eager rebalance in which every member gives up its partitions (and may commit
them) before any member receives the new assignment.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from application.errors import CommitFailed
from application.messages import CREATE_TIME, ConsumedRecord, DeliveryError, Headers, TopicPartition, record_bytes
from application.ports import Clock

StoredRecord = ConsumedRecord  # what a partition holds: the record as a consumer receives it


class _Log:
    """One partition: the records it still retains and the offset of the first of them (the log start).

    Records are kept as the ``ConsumedRecord`` a consumer receives (one object per record, shared by every
    read: nothing downstream changes a consumed record), so that a read is a slice.
    """

    __slots__ = ("records", "start")

    def __init__(self) -> None:
        self.records: list[ConsumedRecord] = []
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + len(self.records)

    def trim(self, retained: int) -> None:
        """Drop the oldest records beyond ``retained``, once there are twice as many (amortised O(1))."""
        excess = len(self.records) - retained
        if excess > retained:
            del self.records[:excess]
            self.start += excess


@dataclass(slots=True)
class _Feed:
    """Records written into a topic on demand, as a producer keeping just ahead of its consumers would."""

    records: Iterator[tuple[bytes | None, bytes | None]]
    ahead: int  # top up when a reader gets within this many records of a partition's end
    seconds: float = 0.0  # spent producing the records (pulling them from the iterator), not storing them
    exhausted: bool = False


@dataclass(slots=True)
class _Member:
    topics: tuple[str, ...]
    holding: set[TopicPartition] = field(default_factory=set)  # may consume and commit these
    released_generation: int = 0  # latest generation for which it gave up what it held
    delivered_generation: int = 0  # latest generation whose assignment it was handed
    pending: set[TopicPartition] = field(default_factory=set)
    last_seen: float = 0.0


@dataclass(slots=True)
class _Group:
    generation: int = 0
    assigned_generation: int = 0
    members: dict[str, _Member] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass(slots=True)
class _FailureRule:
    topic: str
    remaining: int | None  # None: until cleared
    error: DeliveryError


@dataclass(frozen=True, slots=True)
class GroupDescription:
    state: str
    members: dict[str, frozenset[TopicPartition]]  # member id -> partitions it holds


class UnknownTopic(Exception):
    pass


class InMemoryBroker:
    """One simulated cluster with one time: its clients take their clock from it, so a fake one drives them all."""

    def __init__(
        self,
        default_partitions: int = 4,
        *,
        auto_create_topics: bool = True,
        session_timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.default_partitions = default_partitions
        self.auto_create_topics = auto_create_topics
        self.session_timeout_s = session_timeout_s
        self.clock = clock or Clock()
        self._changed = threading.Condition(threading.RLock())
        self._topics: dict[str, list[_Log]] = {}
        self._feeds: dict[str, _Feed] = {}
        self._retention: dict[str, int] = {}  # topic -> records kept per partition (absent: all of them)
        self._groups: dict[str, _Group] = {}
        self._failures: list[_FailureRule] = []
        self._round_robin = itertools.count()
        self._member_ids = itertools.count(1)
        # Per-topic max.message.bytes (absent: no limit). A plain dict the sinks read without the lock.
        self.message_limits: dict[str, int] = {}

    # -- topics -----------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None, *, max_message_bytes: int | None = None) -> bool:
        """False when the topic already exists (it is left as it is).

        ``max_message_bytes``: the sinks refuse larger records at publish time, as a Kafka client does.
        """
        with self._changed:
            if name in self._topics:
                return False
            if max_message_bytes is not None:
                self.message_limits[name] = max_message_bytes
            self._topics[name] = [_Log() for _ in range(partitions or self.default_partitions)]
            self._changed.notify_all()
            return True

    def delete_topic(self, name: str) -> None:
        with self._changed:
            self._topics.pop(name, None)
            self._feeds.pop(name, None)
            self.message_limits.pop(name, None)

    def topics(self) -> dict[str, int]:
        with self._changed:
            return {name: len(parts) for name, parts in self._topics.items()}

    def retain(self, topic: str, records_per_partition: int | None) -> None:
        """Bound each of ``topic``'s partitions to about this many records (up to twice as many, between
        trims), or None: keep everything (the default).

        As Kafka's size-based retention: the oldest records go whether or not anyone consumed them, offsets
        keep counting, and a reader whose position fell behind the log start continues from the log start.
        """
        if records_per_partition is not None and records_per_partition < 1:
            raise ValueError("records_per_partition must be at least 1")
        with self._changed:
            if records_per_partition is None:
                self._retention.pop(topic, None)
            else:
                self._retention[topic] = records_per_partition

    def feed(self, topic: str, records: Iterator[tuple[bytes | None, bytes | None]], *, ahead: int = 1000) -> None:
        """Write ``records`` (key, value) into ``topic`` as it is read, round robin over its partitions.

        Whenever a reader gets within ``ahead`` records of a partition's end, the next ``ahead`` records per
        partition are taken from the iterator and appended, so a very long input never has to be held in
        memory at once. ``feed_seconds`` tells how long taking them from the iterator took.
        """
        with self._changed:
            self._partitions(topic)
            self._feeds[topic] = _Feed(records, max(1, ahead))

    def feed_seconds(self, topic: str) -> float:
        with self._changed:
            feed = self._feeds.get(topic)
            return feed.seconds if feed else 0.0

    def _top_up(self, topic: str, parts: list[_Log], feed: _Feed) -> None:
        wanted = feed.ahead * len(parts)
        started = time.perf_counter()
        chunk = list(itertools.islice(feed.records, wanted))
        feed.seconds += time.perf_counter() - started
        if len(chunk) < wanted:
            feed.exhausted = True
        stamp = int(self.clock.now() * 1000)
        round_robin = self._round_robin
        count = len(parts)
        for key, value in chunk:
            number = next(round_robin) % count if key is None else zlib.crc32(key) % count
            log = parts[number]
            log.records.append(ConsumedRecord(topic, number, log.end, key, value, (), stamp, CREATE_TIME))
        retained = self._retention.get(topic)
        if retained is not None:
            for log in parts:
                log.trim(retained)
        if chunk:
            self._changed.notify_all()

    def _partitions(self, topic: str) -> list[_Log]:
        parts = self._topics.get(topic)
        if parts is None:
            if not self.auto_create_topics:
                raise UnknownTopic(topic)
            self.create_topic(topic)
            parts = self._topics[topic]
        return parts

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers = (),
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Store a record and return (partition, offset)."""
        with self._changed:
            parts = self._partitions(topic)
            if partition is None:
                partition = next(self._round_robin) % len(parts) if key is None else zlib.crc32(key) % len(parts)
            log = parts[partition]
            offset = log.end
            stamp = timestamp_ms if timestamp_ms is not None else int(self.clock.now() * 1000)
            log.records.append(ConsumedRecord(topic, partition, offset, key, value, tuple(headers), stamp, CREATE_TIME))
            retained = self._retention.get(topic)
            if retained is not None:
                log.trim(retained)
            self._changed.notify_all()
            return partition, offset

    def append_many(self, records: Sequence[tuple[str, bytes | None, bytes | None, Headers, int]]) -> None:
        """Store (topic, key, value, headers, timestamp_ms) records in order, under one lock and one wake-up.

        Every topic must exist (or be creatable): a caller that may meet an unknown one appends one by one.
        """
        with self._changed:
            retention = self._retention
            round_robin = self._round_robin
            topics: dict[str, list[_Log]] = {}
            for topic, key, value, headers, stamp in records:
                parts = topics.get(topic)
                if parts is None:
                    parts = topics[topic] = self._partitions(topic)
                partition = next(round_robin) % len(parts) if key is None else zlib.crc32(key) % len(parts)
                log = parts[partition]
                stored = log.records
                stored.append(
                    ConsumedRecord(
                        topic, partition, log.start + len(stored), key, value, tuple(headers), stamp, CREATE_TIME
                    )
                )
            for topic in retention.keys() & topics.keys():
                for log in topics[topic]:
                    log.trim(retention[topic])
            self._changed.notify_all()

    def end_offset(self, partition: TopicPartition) -> int:
        with self._changed:
            parts = self._topics.get(partition.topic)
            return parts[partition.partition].end if parts else 0

    def start_offset(self, partition: TopicPartition) -> int:
        """The log start: the first offset still retained."""
        with self._changed:
            parts = self._topics.get(partition.topic)
            return parts[partition.partition].start if parts else 0

    def read(self, partition: TopicPartition, offset: int, max_records: int) -> list[ConsumedRecord]:
        """Up to ``max_records`` from ``offset`` (from the log start, if that offset is no longer retained)."""
        with self._changed:
            parts = self._topics[partition.topic]
            log = parts[partition.partition]
            feed = self._feeds.get(partition.topic)
            if feed is not None and not feed.exhausted and log.end - offset < feed.ahead:
                self._top_up(partition.topic, parts, feed)
            index = max(offset - log.start, 0)
            return log.records[index : index + max_records]

    def records(self, topic: str) -> list[ConsumedRecord]:
        """Every retained record of a topic, partition by partition: for tests and the demo's summary."""
        with self._changed:
            return [record for log in self._topics.get(topic, []) for record in log.records]

    def wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self.clock.wait(self._changed, timeout_s)

    def refusal(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        """Why a producer would refuse this record at publish time (larger than the topic takes), or None."""
        limit = self.message_limits.get(topic)
        if limit is None:
            return None
        size = record_bytes(key, value, headers)
        if size <= limit:
            return None
        return f"MSG_SIZE_TOO_LARGE: the record is {size} bytes, more than {topic}'s max.message.bytes ({limit})"

    # -- failure injection --------------------------------------------------------------------

    def fail_publishes(
        self, topic: str, count: int | None = None, *, retriable: bool = True, message: str = "injected failure"
    ) -> None:
        """Make the next ``count`` publishes to ``topic`` fail (all of them while ``count`` is None)."""
        with self._changed:
            self._failures.append(_FailureRule(topic, count, DeliveryError(message, retriable)))

    def clear_failures(self) -> None:
        with self._changed:
            self._failures.clear()

    def accepts_all(self, topics: set[str]) -> bool:
        """Whether every publish to these topics would succeed now: no failure injected, every topic there.

        Lets a producer store a batch with ``append_many`` instead of asking record by record.
        """
        with self._changed:
            return not self._failures and (self.auto_create_topics or topics <= self._topics.keys())

    def take_failure(self, topic: str) -> DeliveryError | None:
        with self._changed:
            for rule in self._failures:
                if rule.topic == topic and (rule.remaining is None or rule.remaining > 0):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.error
            if topic not in self._topics and not self.auto_create_topics:
                return DeliveryError(f"unknown topic {topic}", retriable=True)
            return None

    # -- consumer groups ------------------------------------------------------------------------

    def join(self, group_id: str, topics: Sequence[str]) -> str:
        with self._changed:
            member_id = f"member-{next(self._member_ids)}"
            group = self._groups.setdefault(group_id, _Group())
            for topic in topics:
                self._partitions(topic)
            group.members[member_id] = _Member(tuple(topics), last_seen=self.clock.monotonic())
            self._start_rebalance(group)
            return member_id

    def leave(self, group_id: str, member_id: str) -> None:
        with self._changed:
            group = self._groups.get(group_id)
            if group is not None and group.members.pop(member_id, None) is not None:
                self._start_rebalance(group)

    def _start_rebalance(self, group: _Group) -> None:
        group.generation += 1
        self._changed.notify_all()

    def _evict_silent_members(self, group: _Group) -> None:
        deadline = self.clock.monotonic() - self.session_timeout_s
        silent = [member_id for member_id, member in group.members.items() if member.last_seen < deadline]
        for member_id in silent:
            del group.members[member_id]
        if silent:
            self._start_rebalance(group)

    def sync(self, group_id: str, member_id: str) -> tuple[set[TopicPartition], set[TopicPartition]] | None:
        """Advance one member through a rebalance; returns (revoked, assigned) or None when nothing changed.

        A member first gives up everything it holds (it may still commit those
        partitions while its revocation callback runs, until ``revoke_done``);
        the new assignment is handed out only once every member has let go.
        """
        with self._changed:
            group = self._groups.get(group_id)
            if group is None or member_id not in group.members:
                raise CommitFailed(f"{member_id} is no longer a member of group {group_id}")
            member = group.members[member_id]
            member.last_seen = self.clock.monotonic()
            self._evict_silent_members(group)
            generation = group.generation
            if member.delivered_generation == generation:
                return None
            if member.released_generation < generation:
                member.released_generation = generation
                if member.holding:
                    return set(member.holding), set()
            if group.assigned_generation != generation:
                if any(m.released_generation < generation or m.holding for m in group.members.values()):
                    return None  # others still hold partitions of the previous generation
                self._assign(group)
            member.holding = member.pending
            member.delivered_generation = generation
            return set(), set(member.holding)

    def revoke_done(self, group_id: str, member_id: str) -> None:
        with self._changed:
            group = self._groups.get(group_id)
            if group is not None and member_id in group.members:
                group.members[member_id].holding = set()
                self._changed.notify_all()

    def _assign(self, group: _Group) -> None:
        """Range assignment per topic, members in id order: deterministic, like Kafka's default."""
        members = sorted(group.members)
        for member_id in members:
            group.members[member_id].pending = set()
        for topic in sorted({topic for m in group.members.values() for topic in m.topics}):
            subscribers = [m for m in members if topic in group.members[m].topics]
            count = len(self._topics[topic])
            for number in range(count):
                owner = subscribers[number * len(subscribers) // count]
                group.members[owner].pending.add(TopicPartition(topic, number))
        group.assigned_generation = group.generation

    def describe_group(self, group_id: str) -> GroupDescription:
        """As Kafka describes a group: Stable once every member has its assignment, and who holds what.

        Like Kafka, it cannot tell a silent member from a live one before its session times out.
        """
        with self._changed:
            group = self._groups.get(group_id)
            if group is None or not group.members:
                return GroupDescription("Empty", {})
            stable = group.assigned_generation == group.generation and all(
                m.delivered_generation == group.generation for m in group.members.values()
            )
            holding = {member_id: frozenset(member.holding) for member_id, member in group.members.items()}
            return GroupDescription("Stable" if stable else "PreparingRebalance", holding)

    def commit(self, group_id: str, member_id: str, offsets: dict[TopicPartition, int]) -> None:
        with self._changed:
            group = self._groups.get(group_id)
            member = group.members.get(member_id) if group else None
            if group is None or member is None:
                raise CommitFailed(f"{member_id} is not a member of group {group_id}")
            foreign = [tp for tp in offsets if tp not in member.holding]
            if foreign:
                raise CommitFailed(f"{member_id} does not own {sorted(foreign)}")
            group.committed.update(offsets)

    def committed(self, group_id: str, partition: TopicPartition) -> int | None:
        with self._changed:
            group = self._groups.get(group_id)
            return group.committed.get(partition) if group else None

    def delete_group(self, group_id: str) -> bool:
        """Forget a group and its committed offsets; False (and nothing deleted) while it has members."""
        with self._changed:
            group = self._groups.get(group_id)
            if group is not None and group.members:
                return False
            self._groups.pop(group_id, None)
            return True
