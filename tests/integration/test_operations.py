"""What an operator relies on, against a real broker: the generator, metrics and health, and the DLQ tools."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest

from application import dlq_headers
from application.messages import ConsumedRecord, header_value
from domain.outcomes import Processed, Rejected
from domain.processing import LoginEventProcessor
from tests.contract.kits import ConfluentKit
from tests.integration.harness import ROOT, Dataset, Service, Topics

pytestmark = pytest.mark.integration


def cli(
    bootstrap: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env={**clean, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BROKER_CLIENT": "confluent",
             **(env or {})},
        capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
    )  # fmt: skip


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name}{labels} not exposed"
    return float(match.group(1))


def test_generator_publishes_the_requested_defect_ratio(kafka_bootstrap: str) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    topic = kit.topic(4)
    result = cli(
        kafka_bootstrap, "produce", "--count", "5000", "--invalid-ratio", "0.2", "--seed", "3", "--topic", topic
    )
    assert result.returncode == 0, result.stderr
    assert "sent 5,000 records" in result.stderr and "5,000 acknowledged" in result.stderr
    records = kit.read_all(topic, 5000)
    assert len(records) == 5000
    processor = LoginEventProcessor()
    reasons = Counter(
        outcome.reason.value
        for outcome in (processor.process(r.value, "2026-01-01T00:00:00.000Z") for r in records)
        if isinstance(outcome, Rejected)
    )
    assert 0.17 < sum(reasons.values()) / 5000 < 0.23
    assert len(reasons) == 9, f"every rejection reason should appear: {reasons}"
    valid = [json.loads(r.value or b"") for r in records if isinstance(processor.process(r.value, "x"), Processed)]
    stamps = [event["timestamp"] for event in valid]
    assert any(isinstance(s, str) for s in stamps) and any(isinstance(s, int) for s in stamps)


def test_generator_rate_is_smooth(kafka_bootstrap: str) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    topic = kit.topic(1)
    started = time.monotonic()
    result = cli(kafka_bootstrap, "produce", "--count", "600", "--rate", "300", "--topic", topic)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed >= 1.8  # 600 records at 300/s cannot take less than about two seconds
    stamps = sorted(r.timestamp_ms or 0 for r in kit.read_all(topic, 600))
    per_100ms = Counter((s - stamps[0]) // 100 for s in stamps)
    assert max(per_100ms.values()) <= 60  # about 30 per 100 ms, never a whole second's worth at once


def test_metrics_and_health_tell_the_truth_while_running(kafka_bootstrap: str) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    topics = Topics.create(kit)
    dataset = Dataset.produce(kit, topics.input, 3000, seed=31)
    service = Service(kafka_bootstrap, "confluent", topics)
    base = f"http://127.0.0.1:{service.port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and get(f"{base}/readyz")[0] != 200:
            assert service.process.poll() is None, service.output()
            time.sleep(0.2)
        status, body = get(f"{base}/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "reason": "ok"}
        assert get(f"{base}/healthz") == (200, json.dumps({"alive": True}))
        assert get(f"{base}/nope")[0] == 404
        service.wait_consumed(3000)
        time.sleep(6)  # lag is reported every 5 s, and acknowledgements may still be arriving
        _, text = get(f"{base}/metrics")
        expected: Counter[str] = Counter(reason for reason in dataset.values.values() if reason)
        assert metric(text, "pipeline_records_consumed_total") == 3000
        assert metric(text, "pipeline_records_processed_total") == len(dataset.valid_by_user)
        for reason, count in expected.items():
            assert metric(text, "pipeline_records_dead_lettered_total", f'{{reason="{reason}"}}') == count
        assert metric(text, "pipeline_offset_commits_total") >= 1
        assert metric(text, "pipeline_records_in_flight") == 0
        assert metric(text, "pipeline_paused_partitions") == 0
        assert metric(text, "pipeline_end_to_end_latency_seconds_count") >= 1
        assert metric(text, "pipeline_batch_duration_seconds_count") >= 1
        for partition in range(4):
            assert metric(text, "pipeline_consumer_lag", f'{{partition="{partition}",topic="{topics.input}"}}') == 0
        service.signal(signal.SIGTERM)
        assert service.wait(60) == 0
    finally:
        if service.process.poll() is None:
            service.kill()


def test_dlq_inspect_counts_and_replay_resumes_without_double_sending(kafka_bootstrap: str) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    topics = Topics.create(kit)
    dataset = Dataset.produce(kit, topics.input, 20_000, seed=32)
    env = {"INPUT_TOPIC": topics.input, "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq,
           "CONSUMER_GROUP": topics.group, "METRICS_PORT": "0"}  # fmt: skip
    assert cli(kafka_bootstrap, "run", "--idle-timeout", "5", env=env).returncode == 0
    expected: Counter[str] = Counter(reason for reason in dataset.values.values() if reason)
    dead_total = sum(expected.values())

    inspected = cli(kafka_bootstrap, "dlq", "inspect", "--limit", "3", env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert f"{topics.dlq}: {dead_total:,} dead letter(s)" in inspected.stdout
    for reason, count in expected.items():
        # dead letters, then how many no replay has sent yet: all of them, before the first replay
        assert re.search(rf"^\s+{reason}\s+{count:,}\s+{count:,}$", inspected.stdout, re.M), (reason, inspected.stdout)
    assert inspected.stdout.count("\n- ") == 3
    again = cli(kafka_bootstrap, "dlq", "inspect", "--limit", "1", env=env)
    assert f"{dead_total:,} dead letter(s)" in again.stdout  # inspecting moved nothing

    target = kit.topic(4)
    replay_env = {**env, "MAX_RECORDS_PER_SECOND": "300"}  # ~7 s for ~2,000 records: interrupted half-way
    command = [sys.executable, "-m", "entrypoints.cli", "dlq", "replay", "--to", target]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    interrupted = subprocess.Popen(
        command, env={**clean, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, **replay_env},
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    time.sleep(3.0)
    interrupted.send_signal(signal.SIGTERM)
    _, stderr = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 0, stderr
    first = int(re.search(r"replayed ([0-9,]+) record", stderr).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < first < dead_total, stderr

    resumed = cli(kafka_bootstrap, "dlq", "replay", "--to", target, env=env)
    assert resumed.returncode == 0, resumed.stderr
    replayed = kit.read_all(target, dead_total)
    assert len(replayed) == dead_total
    assert len({r.value for r in replayed}) == dead_total, "a replayed record was sent twice"
    assert {r.value for r in replayed} == {v for v, reason in dataset.values.items() if reason}
    for record in replayed[:200]:
        assert header_value(record.headers, dlq_headers.REPLAY_COUNT) == b"1"
        assert not any(name in dlq_headers.DLQ_HEADERS for name, _ in record.headers)

    only = cli(kafka_bootstrap, "dlq", "replay", "--reason", "invalid_ip", "--max", "5", "--to", kit.topic(1),
               env={**env, "CONSUMER_GROUP": f"{topics.group}-2"})  # fmt: skip
    assert only.returncode == 0 and "replayed 5 record(s)" in only.stderr, only.stderr


def replayed(result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(re-published, skipped as already replayed by another filter) from a replay's summary line."""
    assert result.returncode == 0, result.stderr
    match = re.search(r"replayed ([0-9,]+) record\(s\).* ([0-9,]+) already replayed", result.stderr)
    assert match, result.stderr
    return int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_each_replay_filter_keeps_its_own_position(kafka_bootstrap: str, client: str) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    dlq, target, again = kit.topic(3), kit.topic(2), kit.topic(2)
    counts = {"missing_field": 60, "malformed_json": 40, "invalid_ip": 30, "processing_error": 10}
    reasons = [reason for reason, count in counts.items() for _ in range(count)]
    reasons = [reasons[(n * 11) % len(reasons)] for n in range(len(reasons))]  # interleaved: 11 and 140 are coprime
    sink = kit.sink()
    for number, reason in enumerate(reasons):
        original = ConsumedRecord("user-login", number % 4, number, f"k{number}".encode(), f"v{number}".encode(), [])
        headers = dlq_headers.dead_letter_headers(original, reason, "why", "2026-01-01T00:00:00.000Z")
        sink.publish(dlq, original.key, original.value, headers, lambda error: None)
    assert sink.flush(30)
    sink.close()
    env = {"DLQ_TOPIC": dlq, "CONSUMER_GROUP": f"g-{uuid.uuid4().hex[:8]}", "BROKER_CLIENT": client}

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(kafka_bootstrap, "dlq", "replay", *args, env=env, timeout=120)

    assert replayed(replay("--reason", "missing_field", "--to", target, "--max", "20")) == (20, 0)
    assert replayed(replay("--reason", "missing_field", "--to", target)) == (40, 0)
    assert replayed(replay("--reason", "malformed_json", "--to", target)) == (40, 0)  # nothing hidden from it
    inspected = cli(kafka_bootstrap, "dlq", "inspect", "--limit", "1", env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert f"{dlq}: 140 dead letter(s), 40 not replayed yet" in inspected.stdout, inspected.stdout
    for reason, count in counts.items():
        waiting = 0 if reason in ("missing_field", "malformed_json") else count
        assert re.search(rf"^\s+{reason}\s+{count}\s+{waiting}$", inspected.stdout, re.M), inspected.stdout
    assert replayed(replay("--to", target)) == (40, 100)  # the rest, and nothing the filtered replays sent
    assert replayed(replay("--to", target)) == (0, 0)

    sent = kit.read_all(target, len(reasons))
    assert Counter(r.value for r in sent) == {f"v{n}".encode(): 1 for n in range(len(reasons))}

    unknown = replay("--reason", "no_such_reason", "--to", target)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().count("\n") == 0 and "missing_field" in unknown.stderr, unknown.stderr

    assert replayed(replay("--from-beginning", "--to", again)) == (len(reasons), 0)
    assert len(kit.read_all(again, len(reasons))) == len(reasons)
