"""A consumer-group member of the in-memory broker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adapters.memory.broker import InMemoryBroker
from application.messages import ConsumedRecord, TopicPartition
from application.ports import GroupView, MessageSource, RebalanceListener

_WAIT_STEP_S = 0.02


class InMemorySource(MessageSource):
    def __init__(self, broker: InMemoryBroker, group_id: str, *, auto_offset_reset: str = "earliest") -> None:
        self._broker = broker
        self._clock = broker.clock
        self._group_id = group_id
        self._reset_to_latest = auto_offset_reset == "latest"
        self._member_id: str | None = None
        self._listener: RebalanceListener | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._rotation = 0
        self._topics: tuple[str, ...] = ()

    @property
    def assignment(self) -> list[TopicPartition]:
        return sorted(self._positions)

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._listener = listener
        self._topics = tuple(topics)
        self._member_id = self._broker.join(self._group_id, topics)

    def _rebalance(self) -> None:
        assert self._member_id is not None and self._listener is not None
        while (change := self._broker.sync(self._group_id, self._member_id)) is not None:
            revoked, assigned = change
            if revoked:
                self._listener.on_revoked(sorted(revoked))
                for partition in revoked:
                    self._positions.pop(partition, None)
                    self._paused.discard(partition)
                self._broker.revoke_done(self._group_id, self._member_id)
            if assigned:
                for partition in assigned:
                    committed = self._broker.committed(self._group_id, partition)
                    if committed is None:
                        committed = self._broker.end_offset(partition) if self._reset_to_latest else 0
                    self._positions[partition] = committed
                self._listener.on_assigned(sorted(assigned))
            if not revoked:
                return

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        deadline = self._clock.monotonic() + timeout_s
        while True:
            self._rebalance()
            records = self._fetch(max_records) if max_records > 0 else []
            remaining = deadline - self._clock.monotonic()
            if records or remaining <= 0:
                return records
            self._broker.wait_for_change(min(remaining, _WAIT_STEP_S))

    def _fetch(self, max_records: int) -> list[ConsumedRecord]:
        partitions = [p for p in sorted(self._positions) if p not in self._paused]
        if not partitions:
            return []
        self._rotation = (self._rotation + 1) % len(partitions)
        records: list[ConsumedRecord] = []
        for partition in partitions[self._rotation :] + partitions[: self._rotation]:
            chunk = self._broker.read(partition, self._positions[partition], max_records - len(records))
            if chunk:
                self._positions[partition] = chunk[-1].offset + 1
                records.extend(chunk)
                if len(records) >= max_records:
                    break
        return records

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        assert self._member_id is not None
        self._broker.commit(self._group_id, self._member_id, dict(offsets))

    def lag(self) -> dict[TopicPartition, int]:
        return {p: self._broker.end_offset(p) - position for p, position in self._positions.items()}

    def group_view(self) -> GroupView:
        description = self._broker.describe_group(self._group_id)
        counts = self._broker.topics()
        partitions = frozenset(TopicPartition(t, n) for t in self._topics for n in range(counts.get(t, 0)))
        owned = frozenset(p for held in description.members.values() for p in held) & partitions
        return GroupView(
            state=description.state,
            joined=self._member_id in description.members,
            partitions=partitions,
            owned=owned,
            mine=description.members.get(self._member_id or "", frozenset()) & partitions,
            members=len(description.members),
            session_timeout_s=self._broker.session_timeout_s,
        )

    def group_metadata(self) -> object:
        return (self._group_id, self._member_id)

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self._positions:
                self._positions[partition] = offset

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.difference_update(partitions)

    def close(self) -> None:
        if self._member_id is None:
            return
        if self._positions and self._listener is not None:
            self._listener.on_revoked(sorted(self._positions))
        self._broker.leave(self._group_id, self._member_id)
        self._member_id = None
        self._positions.clear()
