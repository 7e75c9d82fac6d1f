"""A kafka-python consumer behind the MessageSource port: manual commits, batch polling, rebalance callbacks.

Two things differ from confluent-kafka and shape this adapter (kafka-python 3.x):

* The client runs its network I/O, group protocol and rebalance callbacks on
  its own I/O thread. A rebalance callback may not call a blocking consumer
  method from there (``commit`` would raise), yet our RebalanceListener commits
  on revocation. So the callback is awaited on the I/O loop while a short-lived
  worker thread runs our listener. Meanwhile the caller's thread is blocked
  inside ``poll`` or ``close`` (the only calls that run a rebalance), so the
  listener still runs strictly between two of the caller's own statements, as
  the port promises, and the listener's ``commit`` goes through normally.

* The constructor does no I/O: ``api_version`` is given (see
  ``api_version_ceiling``), so it never probes a broker that may be down. An
  unreachable cluster shows up as a group coordinator that stays unknown:
  ``poll_batch`` keeps polling while it is, and raises BrokerUnavailable once
  it has been for ``_UNREACHABLE_AFTER_S`` (then on every call, after one
  poll), while the client keeps reconnecting with its own backoff in the
  background. As soon as the coordinator answers, polling carries on. An
  empty batch therefore always means quiet partitions, never "no group yet".
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    KafkaConfigurationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from adapters.kafka_python.admin import KafkaPythonAdmin
from adapters.kafka_python.config import (
    OWNERSHIP_LOST,
    client_config,
    connection_problem,
    connection_recovered,
    quiet_repeated_client_logs,
    translate_error,
    unavailable,
)
from adapters.kafka_source import ConsumerOptions, KafkaSource
from application.errors import BrokerUnavailable, CommitFailed, InvalidConfiguration, UnsupportedOperation
from application.messages import CREATE_TIME, LOG_APPEND_TIME, ConsumedRecord, TopicPartition
from application.ports import GroupView, RebalanceListener

log = logging.getLogger(__name__)

# The coordinator may be unknown for a moment in normal operation (it moved, a connection was recycled):
# only this long without one counts as an unreachable cluster.
_UNREACHABLE_AFTER_S = 3.0
_TIMESTAMP_TYPES = {0: CREATE_TIME, 1: LOG_APPEND_TIME}  # ConsumerRecord.timestamp_type, as in the protocol
_COMMIT_TIMEOUT_MS = 10_000
# Longest stay in one poll_batch while a group join completes or the coordinator is looked up (a new
# group's first join waits group.initial.rebalance.delay.ms, 3 s by default), and the step of that wait.
_GROUP_WAIT_S = 5.0
_GROUP_POLL_S = 0.5
# Describing the group (at idle checks only): the longest one request may take.
_DESCRIBE_TIMEOUT_MS = 5_000
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    # Verifying each batch's CRC32C in pure Python costs about two thirds of the read throughput; with the
    # crc32c package (C) it is free. librdkafka does not check by default either (check.crcs=false).
    "check_crcs": importlib.util.find_spec("crc32c") is not None,
    # Bound what is prefetched, so memory stays flat whatever the backlog.
    "max_partition_fetch_bytes": 1024 * 1024,
    "fetch_max_bytes": 16 * 1024 * 1024,
    "max_poll_records": 500,
}


def _ours(partitions: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    return sorted(TopicPartition(p.topic, p.partition) for p in partitions)


def _theirs(partitions: Iterable[TopicPartition]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(p.topic, p.partition) for p in partitions]


class _RebalanceBridge(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Awaited on kafka-python's I/O loop; runs our listener on a worker thread (see the module docstring)."""

    def __init__(self, source: KafkaPythonSource, listener: RebalanceListener) -> None:
        self._source = source
        self._listener = listener
        self.error: BaseException | None = None

    async def on_partitions_revoked(self, revoked: set[KafkaTopicPartition]) -> None:
        if revoked:
            await self._run(self._listener.on_revoked, _ours(revoked))

    async def on_partitions_assigned(self, assigned: set[KafkaTopicPartition]) -> None:
        self._source.assigned()
        await self._run(self._listener.on_assigned, _ours(assigned))

    async def on_partitions_lost(self, lost: set[KafkaTopicPartition]) -> None:
        if lost:
            log.warning("partitions lost (session expired?): %s; their next owner re-reads them", _ours(lost))
            await self._run(self._listener.on_lost, _ours(lost))

    def _run(self, call: Callable[[list[TopicPartition]], None], partitions: list[TopicPartition]) -> Future:
        done = Future()
        resolve = self._source.resolver()

        def work() -> None:
            try:
                call(partitions)
            except BaseException as error:  # handed to the caller's thread by poll_batch
                self.error = error
                log.debug("rebalance listener failed", exc_info=True)
            resolve(done)

        threading.Thread(target=work, name="kafka-python-rebalance", daemon=True).start()
        return done


class KafkaPythonSource(KafkaSource):
    def _start(self, options: ConsumerOptions) -> None:
        self._admin: KafkaPythonAdmin | None = None  # created at the first idle check that describes the group
        session_timeout_ms = options.session_timeout_ms
        config = client_config(
            self._connection,
            "consumer",
            {
                **CONSUMER_DEFAULTS,
                "group_id": options.group_id,
                "auto_offset_reset": options.auto_offset_reset,
                "session_timeout_ms": session_timeout_ms,
                "heartbeat_interval_ms": min(3_000, max(1, session_timeout_ms // 3)),
                "isolation_level": options.isolation_level,
                **options.extra,
            },
            reserved=("enable_auto_commit",),
        )
        try:
            self._consumer = KafkaConsumer(**config)
        except (KafkaConfigurationError, ValueError, TypeError) as error:
            raise InvalidConfiguration(f"invalid consumer configuration: {error}") from None
        quiet_repeated_client_logs()
        self._bridge: _RebalanceBridge | None = None
        self._unknown_since: float | None = None
        self._closed = False

    # -- called from the rebalance bridge ------------------------------------------------------

    def assigned(self) -> None:
        self._unknown_since = None

    def resolver(self) -> Callable[[Future], None]:
        """How a worker thread completes a Future the I/O loop awaits, waking the loop at once."""
        manager: Any = getattr(self._consumer, "_manager", None)  # kafka-python 3.x: call_soon is thread-safe

        def resolve(future: Future) -> None:
            try:
                manager.call_soon(lambda: future.success(None))
            except Exception:  # noqa: BLE001 - no loop to hand it to (closing): complete it here instead
                future.success(None)

        return resolve

    # -- MessageSource ---------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._bridge = _RebalanceBridge(self, listener)
        self._topics = list(topics)
        self._consumer.subscribe(topics=list(topics), listener=self._bridge)

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        try:
            batches = self._poll(max_records, timeout_s)
            give_up = time.monotonic() + _GROUP_WAIT_S
            # "Nothing yet" must mean the partitions are quiet, not that this member has no working group
            # (a caller may take it for idleness): while the coordinator is unknown, or a join is under
            # way, keep polling, past timeout_s if need be, until either settles (or give up, or raise).
            # A join must complete inside poll() anyway: kafka-python 3.0.12 throws away one that completes
            # between two polls and joins again, which makes the whole group rebalance once more.
            while not batches:
                if not self._coordinator_known():
                    self._check_reachable()  # raises once it has been unknown for a while
                elif not self._joining():
                    break
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    break
                batches = self._poll(max_records, min(remaining, _GROUP_POLL_S))
        except KafkaError as error:
            self._raise_listener_error()
            raise self._translate(error) from None
        self._raise_listener_error()
        records: list[ConsumedRecord] = []
        append = records.append
        for batch in batches.values():
            for r in batch:
                stamp = r.timestamp if r.timestamp is not None and r.timestamp >= 0 else None
                kind = _TIMESTAMP_TYPES.get(r.timestamp_type)
                append(ConsumedRecord(r.topic, r.partition, r.offset, r.key, r.value, r.headers or (), stamp, kind))
        if records or self._coordinator_known():
            if self._unknown_since is not None:
                connection_recovered()
            self._unknown_since = None
        return records

    def _translate(self, error: BaseException) -> Exception:
        resources = {"group": self._group_id, "topic": ",".join(self._topics)}
        return translate_error(error, self._connection, operation="Read", resources=resources)

    def _poll(self, max_records: int, timeout_s: float) -> dict[Any, list[Any]]:
        timeout_ms = max(0, int(timeout_s * 1000))
        if max_records > 0:
            result: dict[Any, list[Any]] = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
            return result
        return self._poll_without_fetching(timeout_ms)

    def _joining(self) -> bool:
        coordinator = getattr(self._consumer, "_coordinator", None)  # kafka-python internals, read only
        return bool(getattr(coordinator, "rejoining", False))

    def _poll_without_fetching(self, timeout_ms: int) -> dict[Any, list[Any]]:
        """Serve the group (rebalances, callbacks) while every partition is paused, so nothing is consumed."""
        consumer = self._consumer
        active = set(consumer.assignment()) - set(consumer.paused())
        if active:
            consumer.pause(*active)
        try:
            result: dict[Any, list[Any]] = consumer.poll(timeout_ms=timeout_ms, max_records=1)
            return result  # non-empty only if a rebalance just assigned new partitions: theirs to keep
        finally:
            still = active & set(consumer.assignment())
            if still:
                consumer.resume(*still)

    def _raise_listener_error(self) -> None:
        if self._bridge is not None and self._bridge.error is not None:
            error, self._bridge.error = self._bridge.error, None
            raise error

    def _coordinator_known(self) -> bool:
        coordinator = getattr(self._consumer, "_coordinator", None)  # kafka-python internals: no public query
        if coordinator is None or not hasattr(coordinator, "coordinator_unknown"):
            return True  # cannot tell: never claim an outage
        return not coordinator.coordinator_unknown()

    def _check_reachable(self) -> None:
        now = time.monotonic()
        if self._unknown_since is None:
            self._unknown_since = now
        elif now - self._unknown_since >= _UNREACHABLE_AFTER_S:
            problem = connection_problem(self._connection)  # a refused login or TLS handshake, if it logged one
            if problem is not None:
                raise problem
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self._servers}: no group coordinator "
                f"for {now - self._unknown_since:.0f}s (the client keeps reconnecting)"
            )

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        if not offsets:
            return
        payload = {
            KafkaTopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
            for tp, offset in offsets.items()
        }
        try:
            if asynchronous:
                self._consumer.commit_async(payload, callback=self._on_async_commit)
            else:
                self._consumer.commit(payload, timeout_ms=_COMMIT_TIMEOUT_MS)
        except OWNERSHIP_LOST as error:
            raise CommitFailed(str(error)) from None
        except (KafkaTimeoutError, KafkaConnectionError) as error:
            raise unavailable(error, self._servers, self._connection) from None
        except KafkaError as error:
            raise self._translate(error) from None

    @staticmethod
    def _on_async_commit(offsets: Mapping[Any, Any], result: object) -> None:
        if isinstance(result, BaseException):
            log.warning("asynchronous commit failed (the next commit covers it): %s", result)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        mine = set(self._consumer.assignment())
        wanted = [p for p in _theirs(partitions) if p in mine]
        if wanted:
            self._consumer.pause(*wanted)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        mine = set(self._consumer.assignment())
        wanted = [p for p in _theirs(partitions) if p in mine]
        if wanted:
            self._consumer.resume(*wanted)

    def lag(self) -> dict[TopicPartition, int]:
        """From the high watermark each fetch response carries: no extra request."""
        lags = {}
        try:
            for partition in self._consumer.assignment():
                high = self._consumer.highwater(partition)
                if high is None:
                    continue
                position = self._consumer.position(partition, timeout_ms=0)
                if position is not None:
                    lags[TopicPartition(partition.topic, partition.partition)] = max(0, high - position)
        except (KafkaError, ValueError):
            return {}
        return lags

    def unreadable(self) -> list[TopicPartition]:
        """Partitions whose position is still unknown: kafka-python retries the offset fetch meanwhile."""
        assigned = sorted(self._consumer.assignment())
        try:
            unknown = [partition for partition in assigned if self._consumer.position(partition, timeout_ms=0) is None]
        except (KafkaError, ValueError):  # cannot tell: do not call any of them readable
            unknown = assigned
        return [TopicPartition(partition.topic, partition.partition) for partition in unknown]

    def group_view(self) -> GroupView:
        """The group coordinator's description of the group, through an admin client of its own."""
        if self._admin is None:
            self._admin = KafkaPythonAdmin(self._connection, timeout_ms=_DESCRIBE_TIMEOUT_MS)
        try:
            group, counts = self._admin.describe_group(self._group_id, self._topics)
        except InvalidConfiguration as error:
            raise UnsupportedOperation(str(error)) from None
        member_id = self._consumer.group_metadata().member_id or ""
        partitions = {TopicPartition(t, n) for t in self._topics for n in range(counts.get(t, 0))}
        owned: set[TopicPartition] = set()
        mine: set[TopicPartition] = set()
        members = group.get("members") or []
        for member in members:
            assignment = member.get("member_assignment") or {}
            held = {
                TopicPartition(topics["topic"], number)
                for topics in (assignment.get("assigned_partitions") or [] if isinstance(assignment, dict) else [])
                for number in topics["partitions"]
            } & partitions
            owned |= held
            if member.get("member_id") == member_id:
                mine = held
        return GroupView(
            state=str(group.get("group_state") or "Unknown"),
            joined=bool(member_id) and any(m.get("member_id") == member_id for m in members),
            partitions=frozenset(partitions),
            owned=frozenset(owned),
            mine=frozenset(mine),
            members=len(members),
            session_timeout_s=self._session_timeout_s,
        )

    def close(self) -> None:
        """Revokes through the listener (so it can commit), leaves the group, stops the I/O thread."""
        if self._closed:
            return
        self._closed = True
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        try:
            self._consumer.close(autocommit=False, timeout_ms=_COMMIT_TIMEOUT_MS)
        except (KafkaError, RuntimeError) as error:
            log.warning("consumer close: %s", error)
        try:
            self._raise_listener_error()
        except Exception as error:  # noqa: BLE001 - closing: report, do not mask the caller's own exit
            log.warning("rebalance listener failed while closing: %s", error)

    # -- for exactly-once: the transaction needs the group's identity and rewinds on abort ----------

    def group_metadata(self) -> object:
        return self._consumer.group_metadata()

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        mine = set(self._consumer.assignment())
        for tp, offset in offsets.items():
            partition = KafkaTopicPartition(tp.topic, tp.partition)
            if partition in mine:
                self._consumer.seek(partition, offset)
