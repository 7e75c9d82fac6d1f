"""Which offsets may be committed: only those below the first record still unacknowledged."""

from __future__ import annotations

from application.messages import TopicPartition


class PartitionLedger:
    """One assigned partition's records between consumption and acknowledgement.

    A delivery keeps a reference to the ledger it was tracked in, so a late
    callback from before a rebalance lands on a retired ledger and can never
    advance the position of the partition's next owner.
    """

    __slots__ = ("committed", "next_offset", "pending", "retired")

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.next_offset = -1
        self.committed = -1
        self.retired = False

    def track(self, offset: int) -> None:
        self.pending.add(offset)
        self.next_offset = offset + 1

    def position(self) -> int:
        """The offset a restarted consumer must resume from; -1 before the first record."""
        return min(self.pending) if self.pending else self.next_offset


class OffsetLedger:
    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionLedger] = {}

    def partition(self, topic: str, partition: int) -> PartitionLedger:
        key = (topic, partition)
        ledger = self._partitions.get(key)
        if ledger is None:
            ledger = self._partitions[key] = PartitionLedger()
        return ledger

    def commit_candidates(self, only: set[tuple[str, int]] | None = None) -> dict[TopicPartition, int]:
        """Positions that moved since they were last committed."""
        offsets: dict[TopicPartition, int] = {}
        for key, ledger in self._partitions.items():
            if only is not None and key not in only:
                continue
            position = ledger.position()
            if position > ledger.committed:
                offsets[TopicPartition(*key)] = position
        return offsets

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for key, offset in offsets.items():
            ledger = self._partitions.get(key)
            if ledger is not None:
                ledger.committed = max(ledger.committed, offset)

    def retire(self, partitions: set[tuple[str, int]]) -> int:
        """Forget revoked partitions; returns how many of their records were still in flight."""
        abandoned = 0
        for key in partitions:
            ledger = self._partitions.pop(key, None)
            if ledger is not None:
                ledger.retired = True
                abandoned += len(ledger.pending)
        return abandoned
