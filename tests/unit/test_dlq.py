"""DLQ inspect and replay on the in-memory broker."""

from collections import Counter

from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from application import dead_letter
from application.dlq import inspect_dead_letters, replay_dead_letters, replay_headers
from application.messages import ConsumedRecord, TopicPartition, header_value

DLQ, TARGET = "user-login-dlq", "user-login"


def broker_with_dead_letters(reasons: list[str]) -> InMemoryBroker:
    broker = InMemoryBroker(default_partitions=2)
    for topic in (DLQ, TARGET):
        broker.create_topic(topic, 2)
    for number, reason in enumerate(reasons):
        source = ConsumedRecord(
            "user-login", 0, number, f"k{number}".encode(), f"v{number}".encode(), [("trace", b"t")]
        )
        headers = dead_letter.dead_letter_headers(source, reason, "why", "2026-01-01T00:00:00.000Z")
        broker.append(DLQ, source.key, source.value, headers, timestamp_ms=1_000 + number)
    return broker


def test_replay_headers_drop_the_dlq_ones_and_count_replays() -> None:
    record = ConsumedRecord(
        "dlq", 0, 0, None, b"x", [("trace", b"t"), (dead_letter.REASON, b"r"), (dead_letter.REPLAY_COUNT, b"2")]
    )
    assert replay_headers(record) == [("trace", b"t"), (dead_letter.REPLAY_COUNT, b"3")]


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
    assert all(header_value(r.headers, dead_letter.REPLAY_COUNT) == b"1" for r in replayed)
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
