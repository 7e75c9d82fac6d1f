"""The idle timeout never calls the input drained while another member, perhaps a dead one, holds partitions.

Time is a FakeClock shared by the pipeline and the in-memory broker's sessions: each poll moves it on by
``TICK_S``, so the waiting for a silent member's session is driven, not slept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from application import dlq_headers
from application.at_least_once import AtLeastOncePipeline
from application.dlq_repair import replay_dead_letters
from application.errors import BrokerUnavailable, UnsupportedOperation
from application.exactly_once import ExactlyOncePipeline
from application.loop import DrainCheck
from application.messages import ConsumedRecord, TopicPartition
from application.ports import GroupView, MessageSource, RebalanceListener
from application.settings import PipelineSettings
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
GOOD = {"user_id": "u", "app_version": "2.3.0", "device_type": "iOS", "ip": "84.115.150.27", "locale": "RU"}
SESSION_S, IDLE_S, TICK_S = 6.0, 5.0, 0.5


class _Ignore:
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None: ...


class _TickingSource(InMemorySource):
    """Each poll takes ``TICK_S`` of fake time; ``peers`` poll too, so they stay in the group (alive)."""

    def __init__(self, broker: InMemoryBroker, group: str, clock: FakeClock, peers: Sequence[InMemorySource] = ()):
        super().__init__(broker, group)
        self._clock = clock
        self._peers = peers
        self.views: list[GroupView] = []

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        self._clock.advance(TICK_S)
        for peer in self._peers:
            peer.poll_batch(0, 0.0)
        return super().poll_batch(max_records, 0.0)

    def group_view(self) -> GroupView:
        view = super().group_view()
        self.views.append(view)
        return view


def _broker(clock: FakeClock, partitions: int = 2, records: int = 100) -> InMemoryBroker:
    broker = InMemoryBroker(default_partitions=partitions, session_timeout_s=SESSION_S, clock=clock)
    for topic in (IN, OUT, DLQ):
        broker.create_topic(topic, partitions)
    for number in range(records):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u-{number}"}).encode())
    return broker


def _member(broker: InMemoryBroker, group: str, topic: str) -> InMemorySource:
    """A member that joins, takes every partition and reads a little, committing nothing."""
    member = InMemorySource(broker, group)
    member.subscribe([topic], _Ignore())
    member.poll_batch(10, 0.0)
    assert member.assignment, "the first member must hold the partitions"
    return member


def _pipeline(kind: str, source: MessageSource, broker: InMemoryBroker, clock: FakeClock) -> Any:
    settings = PipelineSettings(poll_timeout_s=0.0, commit_interval_s=0.0, shutdown_timeout_s=2.0)
    if kind == "at-least-once":
        return AtLeastOncePipeline(source, InMemorySink(broker), LoginEventProcessor(), settings, clock=clock)
    from adapters.memory import InMemoryTransactionalSink

    return ExactlyOncePipeline(source, InMemoryTransactionalSink(broker), LoginEventProcessor(), settings, clock=clock)


def _committed(broker: InMemoryBroker, group: str, topic: str, partitions: int = 2) -> list[int | None]:
    return [broker.committed(group, TopicPartition(topic, p)) for p in range(partitions)]


def _ends(broker: InMemoryBroker, topic: str, partitions: int = 2) -> list[int]:
    return [broker.end_offset(TopicPartition(topic, p)) for p in range(partitions)]


@pytest.mark.parametrize("kind", ["at-least-once", "exactly-once"])
def test_a_restart_waits_for_the_dead_members_session_then_reads_everything(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    broker = _broker(clock)
    _member(broker, "g", IN)  # then silent: killed with kill -9, its session not expired yet
    started = clock.monotonic()
    source = _TickingSource(broker, "g", clock)
    with caplog.at_level(logging.INFO, logger="application.loop"):
        stats = _pipeline(kind, source, broker, clock).run(idle_timeout_s=IDLE_S)
    assert stats.consumed == 100
    assert _committed(broker, "g", IN) == _ends(broker, IN)
    # The first idle check found the group waiting for the dead member, and said so once.
    assert source.views[0].state == "PreparingRebalance"
    waits = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert waits == [
        "waiting up to 6s for the group: it is rebalancing (PreparingRebalance, 2 member(s)) and partitions "
        "user-login[0, 1] are still held by another member (a member that stopped responding keeps its "
        "partitions until its session times out)"
    ]
    # It stopped only after the session expired, the records were read, and a whole idle period passed.
    assert clock.monotonic() - started >= SESSION_S + IDLE_S
    assert source.views[-1].stable and source.views[-1].mine == source.views[-1].partitions  # all, at the end


def test_a_member_left_without_partitions_by_live_members_is_idle_and_stops() -> None:
    clock = FakeClock()
    broker = _broker(clock, partitions=1)
    busy = _member(broker, "g", IN)  # owns the only partition, and stays alive (polled at every tick)
    source = _TickingSource(broker, "g", clock, peers=[busy])
    started = clock.monotonic()
    stats = _pipeline("at-least-once", source, broker, clock).run(idle_timeout_s=IDLE_S)
    assert stats.consumed == 0
    assert source.assignment == []
    view = source.views[-1]
    assert view.stable and view.owned == view.partitions and not view.mine
    assert clock.monotonic() - started < 2 * IDLE_S  # stopped at the first idle check after the group settled


def test_dlq_replay_waits_for_a_dead_replays_partitions() -> None:
    clock = FakeClock()
    broker = _broker(clock, records=0)
    for number in range(20):
        original = ConsumedRecord(IN, 0, number, None, f"v{number}".encode(), ())
        headers = dlq_headers.dead_letter_headers(original, "invalid_ip", "why", "2026-01-01T00:00:00.000Z")
        broker.append(DLQ, None, original.value, headers)
    _member(broker, "replay", DLQ)  # a replay killed a moment ago: it still holds the DLQ's partitions
    source = _TickingSource(broker, "replay", clock)
    summary = replay_dead_letters(source, InMemorySink(broker), DLQ, IN, idle_timeout_s=3.0, clock=clock)
    assert summary.replayed == 20
    assert _committed(broker, "replay", DLQ) == _ends(broker, DLQ)
    assert source.views[0].state == "PreparingRebalance"


class _Described(MessageSource):
    """A source whose only answers are the group's description (or a failure to give one)."""

    def __init__(self, *answers: GroupView | Exception) -> None:
        self._answers = list(answers)

    def group_view(self) -> GroupView | None:
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        return []

    def commit(self, offsets: Any, *, asynchronous: bool = False) -> None: ...

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    def close(self) -> None: ...


P0, P1 = TopicPartition(IN, 0), TopicPartition(IN, 1)


def _view(
    state: str = "Stable",
    *,
    joined: bool = True,
    owned: Sequence[TopicPartition] = (P0, P1),
    mine: Sequence[TopicPartition] = (P0, P1),
    members: int = 2,
) -> GroupView:
    return GroupView(state, joined, frozenset({P0, P1}), frozenset(owned), frozenset(mine), members, SESSION_S)


def test_drained_only_when_stable_joined_and_every_partition_owned(caplog: pytest.LogCaptureFixture) -> None:
    check = DrainCheck(
        _Described(
            _view("Empty", joined=False, owned=(), mine=(), members=0),  # before this member's join reached it
            _view("CompletingRebalance"),
            _view(joined=False, mine=()),  # this member's join has not reached the broker yet
            _view(owned=(P0,), mine=(P0,)),  # P1 belongs to no one
            _view(mine=(P0,)),  # P1 is another member's, which it rejoined the group to keep: alive
        )
    )
    with caplog.at_level(logging.INFO, logger="application.loop"):
        assert [check.drained(IDLE_S, {P0}) for _ in range(5)] == [False, False, False, False, True]
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == "waiting for the group (Empty): this member is joining it"
    assert said[1].startswith("waiting up to 6s for the group: it is rebalancing (CompletingRebalance, 2 member(s)) ")
    assert "this member has not joined it yet, and partitions user-login[0, 1] are held by 2 other" in said[2]
    assert "partitions user-login[1] are not assigned to any member" in said[3]
    assert len(said) == 4


def test_an_assignment_on_its_way_is_not_drained() -> None:
    assert not DrainCheck(_Described(_view())).drained(IDLE_S, {P0})


def test_a_group_that_cannot_be_described_now_is_waited_for_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    check = DrainCheck(_Described(BrokerUnavailable("timed out"), BrokerUnavailable("timed out"), _view()))
    with caplog.at_level(logging.INFO, logger="application.loop"):
        assert [check.drained(IDLE_S, {P0, P1}) for _ in range(3)] == [False, False, True]
    assert [r.getMessage() for r in caplog.records] == ["cannot describe the group yet (timed out): waiting"]


def test_a_broker_that_refuses_to_describe_the_group_leaves_the_members_own_silence() -> None:
    assert DrainCheck(_Described(UnsupportedOperation("GROUP_AUTHORIZATION_FAILED"))).drained(IDLE_S, set())
