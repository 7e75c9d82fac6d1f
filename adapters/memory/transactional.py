"""Transactions on the in-memory broker: records and offsets become visible together, or not at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from adapters.memory.broker import InMemoryBroker
from adapters.refusals import Refusals
from application.errors import TransactionAborted
from application.messages import DeliveryError, Headers, TopicPartition
from application.ports import DeliveryCallback, TransactionalSink

_Pending = tuple[str, bytes | None, bytes | None, Headers, DeliveryCallback]


class InMemoryTransactionalSink(TransactionalSink):
    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self._pending: list[_Pending] | None = None
        self._refusals = Refusals()
        self.committed_transactions = 0
        self.aborted_transactions = 0
        self.prepared = 0

    def prepare(self) -> None:
        self.prepared += 1  # nothing to fence in memory; counted so tests see the pipeline claim its id first

    def begin(self) -> None:
        if self._pending is not None:
            raise RuntimeError("a transaction is already open")
        self._pending = []
        self._refusals.start()

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if self._pending is None:
            raise RuntimeError("publish outside a transaction")
        refusal = self._broker.refusal(topic, key, value, headers)
        if refusal is not None:
            self._refusals.refuse(on_delivery, refusal)
            return
        self._pending.append((topic, key, value, headers, on_delivery))

    def poll(self, timeout_s: float) -> None:
        """Only refusals are owed before ``commit``: the broker takes (or fails) the records there."""
        self._refusals.serve()

    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        if self._pending is None:
            raise RuntimeError("commit outside a transaction")
        group_id, member_id = cast(tuple[str, str], group_metadata)  # what InMemorySource.group_metadata returns
        if self._refusals.since_start:
            refused = self._refusals.since_start
            self._refusals.serve()
            raise TransactionAborted(f"{refused} record(s) of the transaction were refused by the producer")
        failures: list[tuple[DeliveryCallback, DeliveryError]] = []
        for topic, _, _, _, on_delivery in self._pending:
            error = self._broker.take_failure(topic)
            if error is not None:
                failures.append((on_delivery, error))
        if failures:
            for on_delivery, error in failures:
                on_delivery(error)
            raise TransactionAborted(f"{len(failures)} record(s) failed: {failures[0][1]}")
        # CommitFailed (the member no longer owns the partitions) as the real sinks raise it; the
        # transaction stays open for the caller's abort, and nothing of it becomes visible.
        self._broker.commit(group_id, member_id, dict(offsets))
        for topic, key, value, headers, on_delivery in self._pending:
            self._broker.append(topic, key, value, headers)
            on_delivery(None)
        self._pending = None
        self.committed_transactions += 1

    def abort(self) -> None:
        self._refusals.serve()
        if self._pending is not None:
            self.aborted_transactions += 1
        self._pending = None

    def close(self) -> None:
        self.abort()
