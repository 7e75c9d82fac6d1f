"""DLQ inspect and replay on the in-memory broker."""

from collections import Counter

import pytest

from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from adapters.memory.groups import InMemoryGroupOffsets
from application import dlq_headers
from application.dlq_repair import (
    ReplaySummary,
    _Assignments,
    forget_positions,
    inspect_dead_letters,
    read_positions,
    replay_dead_letters,
    replay_group,
    replay_headers,
)
from application.errors import GroupInUse
from application.messages import ConsumedRecord, TopicPartition, header_value
from domain.outcomes import RejectReason
from entrypoints.cli import main

DLQ, TARGET = "user-login-dlq", "user-login"


def broker_with_dead_letters(reasons: list[str]) -> InMemoryBroker:
    broker = InMemoryBroker(default_partitions=2)
    for topic in (DLQ, TARGET):
        broker.create_topic(topic, 2)
    for number, reason in enumerate(reasons):
        source = ConsumedRecord(
            "user-login", 0, number, f"k{number}".encode(), f"v{number}".encode(), [("trace", b"t")]
        )
        headers = dlq_headers.dead_letter_headers(source, reason, "why", "2026-01-01T00:00:00.000Z")
        broker.append(DLQ, source.key, source.value, headers, timestamp_ms=1_000 + number)
    return broker


def test_replay_headers_drop_the_dlq_ones_and_count_replays() -> None:
    record = ConsumedRecord(
        "dlq", 0, 0, None, b"x", [("trace", b"t"), (dlq_headers.REASON, b"r"), (dlq_headers.REPLAY_COUNT, b"2")]
    )
    assert replay_headers(record) == [("trace", b"t"), (dlq_headers.REPLAY_COUNT, b"3")]


def test_inspect_counts_by_reason_and_shows_the_newest() -> None:
    broker = broker_with_dead_letters(["invalid_ip"] * 3 + ["missing_field"] * 2)
    report = inspect_dead_letters(InMemorySource(broker, "inspector"), DLQ, examples=2)
    assert report.total == 5
    assert dict(report.by_reason) == {"invalid_ip": 3, "missing_field": 2}
    assert [r.value for r in report.newest] == [b"v4", b"v3"]
    assert broker.committed("inspector", TopicPartition(DLQ, 0)) is None  # looked, committed nothing


def test_replay_respects_reason_and_max_and_resumes_where_it_stopped() -> None:
    broker = broker_with_dead_letters(["invalid_ip", "missing_field"] * 6)
    first = replay_dead_letters(
        InMemorySource(broker, "replay"), InMemorySink(broker), DLQ, TARGET, reason="invalid_ip", max_records=4
    )
    assert first.replayed == 4
    second = replay_dead_letters(
        InMemorySource(broker, "replay"), InMemorySink(broker), DLQ, TARGET, reason="invalid_ip"
    )
    assert second.replayed == 2
    replayed = broker.records(TARGET)
    assert sorted(r.value or b"" for r in replayed) == sorted(f"v{n}".encode() for n in range(0, 12, 2))
    assert all(header_value(r.headers, dlq_headers.REPLAY_COUNT) == b"1" for r in replayed)
    assert {r.key for r in replayed} == {f"k{n}".encode() for n in range(0, 12, 2)}


def test_replay_never_commits_past_a_record_it_could_not_publish() -> None:
    broker = broker_with_dead_letters(["invalid_ip"] * 6)
    broker.fail_publishes(TARGET, count=1, retriable=False)
    failed = replay_dead_letters(InMemorySource(broker, "replay"), InMemorySink(broker), DLQ, TARGET)
    assert failed.failed == 1
    refused = [v for v in (f"v{n}".encode() for n in range(6)) if v not in {r.value for r in broker.records(TARGET)}]
    assert len(refused) == 1  # the refused record was not skipped...
    again = replay_dead_letters(InMemorySource(broker, "replay"), InMemorySink(broker), DLQ, TARGET)
    assert again.failed == 0
    assert {r.value for r in broker.records(TARGET)} == {f"v{n}".encode() for n in range(6)}  # ...and now arrived
    # At least once: only records after the refused one, in its partition, were published but not committed.
    where = {r.value: (r.partition, r.offset) for r in broker.records(DLQ)}
    refused_partition, refused_offset = where[refused[0]]
    repeated = [value for value, count in Counter(r.value for r in broker.records(TARGET)).items() if count > 1]
    assert all(where[v][0] == refused_partition and where[v][1] > refused_offset for v in repeated)


def replay(
    broker: InMemoryBroker, reason: str | None = None, *, max_records: int | None = None, group: str = "g"
) -> ReplaySummary:
    """What ``pipeline dlq replay`` does: read every filter's position, then replay in this filter's own group."""
    positions = read_positions(InMemoryGroupOffsets(broker), group, DLQ)
    source = InMemorySource(broker, replay_group(group, reason))
    return replay_dead_letters(
        source, InMemorySink(broker), DLQ, TARGET, reason=reason, positions=positions, max_records=max_records
    )


def values_with(broker: InMemoryBroker, reason: str) -> set[bytes]:
    return {
        r.value or b"" for r in broker.records(DLQ) if header_value(r.headers, dlq_headers.REASON) == reason.encode()
    }


MIXED = ["missing_field", "malformed_json", "missing_field", "invalid_ip"] * 10  # 20, 10 and 10 of each


def test_each_filter_keeps_its_own_position_and_the_unfiltered_replay_finds_the_rest() -> None:
    broker = broker_with_dead_letters(MIXED)
    assert replay(broker, "missing_field", max_records=12).replayed == 12
    assert replay(broker, "missing_field").replayed == 8
    malformed = replay(broker, "malformed_json")
    assert (malformed.replayed, malformed.already_replayed) == (10, 0)  # the missing_field replays hid nothing
    for partition in range(2):  # the filtered replays never moved the unfiltered position
        assert broker.committed(replay_group("g"), TopicPartition(DLQ, partition)) is None
    rest = replay(broker)
    assert (rest.replayed, rest.already_replayed, rest.skipped) == (10, 30, 0)
    assert {r.value for r in broker.records(TARGET)} == {f"v{n}".encode() for n in range(len(MIXED))}
    assert len(broker.records(TARGET)) == len(MIXED)  # every record exactly once
    assert replay(broker).replayed == 0
    assert replay(broker, "invalid_ip").replayed == 0  # the unfiltered replay covered these


def test_a_filtered_replay_skips_what_an_interrupted_unfiltered_one_already_sent() -> None:
    broker = broker_with_dead_letters(MIXED)
    assert replay(broker, max_records=15).replayed == 15
    first = {r.value for r in broker.records(TARGET)}
    missing = replay(broker, "missing_field")
    assert missing.replayed == len(values_with(broker, "missing_field") - first)
    assert replay(broker).replayed == len(MIXED) - 15 - missing.replayed
    assert Counter(r.value for r in broker.records(TARGET)).most_common(1)[0][1] == 1  # nothing sent twice
    assert len(broker.records(TARGET)) == len(MIXED)


def test_inspect_counts_per_reason_what_no_replay_has_sent_yet() -> None:
    broker = broker_with_dead_letters(MIXED)
    replay(broker, "malformed_json")
    replay(broker, "missing_field", max_records=5)
    positions = read_positions(InMemoryGroupOffsets(broker), "g", DLQ)
    report = inspect_dead_letters(InMemorySource(broker, "inspector"), DLQ, examples=0, positions=positions)
    assert dict(report.by_reason) == {"missing_field": 20, "malformed_json": 10, "invalid_ip": 10}
    assert dict(report.not_replayed) == {"missing_field": 15, "invalid_ip": 10}


def test_forgetting_the_positions_replays_everything_again_but_not_while_a_replay_runs() -> None:
    broker = broker_with_dead_letters(MIXED)
    replay(broker, "missing_field")
    replay(broker)
    assert len(broker.records(TARGET)) == len(MIXED)
    running = InMemorySource(broker, replay_group("g", "invalid_ip"))
    running.subscribe([DLQ], _Assignments())
    running.poll_batch(1, 0)
    with pytest.raises(GroupInUse, match=r"g\.dlq-replay\.invalid_ip"):
        forget_positions(InMemoryGroupOffsets(broker), "g")
    running.close()
    forget_positions(InMemoryGroupOffsets(broker), "g")
    again = replay(broker)
    assert (again.replayed, again.already_replayed) == (len(MIXED), 0)
    assert Counter(r.value for r in broker.records(TARGET)) == {f"v{n}".encode(): 2 for n in range(len(MIXED))}


def test_reason_codes_are_the_domains_and_the_pipelines_own() -> None:
    assert set(dlq_headers.REASONS) == {r.value for r in RejectReason} | {"publish_failed", "processing_error"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reason", "no_such_reason"], "unknown --reason 'no_such_reason'; the reason codes are: malformed_json, "),
        (["--reason", "invalid_ip", "--from-beginning"], "--from-beginning starts every replay filter over"),
    ],
)
def test_replay_refuses_an_unknown_reason_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "replay", "--broker-client", "memory", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    if "unknown" in message:
        assert all(reason in err for reason in dlq_headers.REASONS)
