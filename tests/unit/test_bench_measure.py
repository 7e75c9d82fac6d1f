"""The benchmark's measure: CPU per record between the first and the last record appended, and its target row."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.contenders import CEILING, CONFLUENT_ALO_1, CONFLUENT_EOS_1, FASTSTREAM, QUIX
from bench.run import FULL_RUNS, _cpu_per_record, _parse, _plan


def test_cpu_per_record_counts_from_the_last_sample_before_t0_to_the_first_after_t_last() -> None:
    # (wall time, CPU seconds so far): start-up burns 2 s of CPU before t0 = 10, work burns 3 s up to t_last = 20.
    samples = [(9.0, 1.5), (9.9, 2.0), (10.1, 2.1), (15.0, 3.5), (20.05, 5.0), (21.0, 5.5)]
    assert _cpu_per_record(samples, t0=10.0, t_last=20.0, records=1_000_000) == pytest.approx(3.0)


def test_cpu_per_record_is_unknown_without_a_sample_before_the_first_record() -> None:
    assert _cpu_per_record([(10.5, 1.0), (21.0, 4.0)], t0=10.0, t_last=20.0, records=1000) is None


def test_cpu_per_record_uses_the_last_sample_when_none_came_after_the_last_record() -> None:
    assert _cpu_per_record([(9.0, 1.0), (19.0, 2.0)], t0=10.0, t_last=20.0, records=1_000_000) == pytest.approx(1.0)


def _document(cpu: float | None) -> dict[str, Any]:
    row = {"name": "confluent-alo-1w", "records_per_s": 50_000, "cpu_us_per_record": cpu, "status": "ok"}
    row |= {"peak_rss_mb": None, "peak_rss_mb_half": None}
    return {"machine": {"records": 100_000}, "contenders": [row]}


@pytest.mark.parametrize(("cpu", "met"), [(9.5, True), (14.3, False), (None, None)])
def test_the_cpu_target_row_reads_the_service_figure(cpu: float | None, met: bool | None) -> None:
    [row] = [t for t in report.targets(_document(cpu)) if "CPU per record" in t["target"]]
    assert row["met"] is met and row["ratio"] == cpu


@pytest.mark.parametrize(("p50", "p99", "met"), [(6.0, 40.0, (True, True)), (47.0, 136.0, (False, False))])
def test_the_latency_target_rows_hold_at_least_once_to_issue_13s_figures(
    p50: float, p99: float, met: tuple[bool, bool]
) -> None:
    document = _document(9.0)
    document["contenders"][0] |= {"p50_ms": p50, "p99_ms": p99}
    rows = [t for t in report.targets(document) if "latency" in t["target"]]
    assert [(r["threshold"], r["met"], r["ratio"]) for r in rows] == [(10.0, met[0], p50), (50.0, met[1], p99)]


def test_the_throughput_targets_are_issue_13s() -> None:
    ceiling = {"name": "ceiling", "records_per_s": 100_000, "status": "ok"}
    eos = {"name": "confluent-eos-1w", "records_per_s": 36_000, "status": "ok"}
    document = _document(9.0)
    document["contenders"] += [ceiling, eos]
    rows = {t["target"]: t for t in report.targets(document)}
    assert rows["confluent at-least-once, 1 worker >= 0.8 x ceiling"]["met"] is False  # 50k of 100k
    assert rows["confluent exactly-once >= 0.7 x at-least-once (1 worker)"]["met"] is True  # 36k of 50k


def test_without_matplotlib_no_chart_is_drawn_and_the_stale_one_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "latest.png"
    stale.write_bytes(b"an older run's chart")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError

    assert report.draw(_document(12.0), tmp_path) is False

    assert not stale.exists()
    [line] = capsys.readouterr().err.splitlines()
    assert "no chart drawn" in line and "matplotlib" in line


def test_the_peers_publish_with_the_projects_producer_settings() -> None:
    """A peer with laxer producer settings would win by doing less: they follow ``PRODUCER_DEFAULTS``."""
    from adapters.confluent.sink import PRODUCER_DEFAULTS
    from bench.peers.rules import PRODUCER

    peer = PRODUCER.librdkafka()
    shared = ("acks", "enable.idempotence", "linger.ms", "compression.type")
    assert {key: peer[key] for key in shared} == {key: PRODUCER_DEFAULTS[key] for key in shared}
    assert PRODUCER.aiokafka()["linger_ms"] == PRODUCER_DEFAULTS["linger.ms"]


def test_quick_mode_reads_as_many_records_as_full_mode_and_saves_time_elsewhere() -> None:
    """The ratios depend on the input's size (librdkafka's prefetch), so quick mode must not shrink it."""
    full, quick = _plan(_parse([])), _plan(_parse(["--quick"]))
    assert quick.records == full.records == 1_000_000
    # The contenders whose ratios make the targets get as many runs as in full mode, the slow ones one.
    assert {c.name: quick.runs_of(c) for c in quick.contenders} == {
        c.name: FULL_RUNS if c in (CEILING, CONFLUENT_ALO_1, CONFLUENT_EOS_1) else 1 for c in quick.contenders
    }
    assert all(full.runs_of(c) == FULL_RUNS for c in full.contenders)
    assert _plan(_parse(["--quick", "--runs", "2"])).runs_of(QUIX) == 2
    assert quick.latency_set == [] and not quick.memory_small
    assert full.latency_set and full.memory_small
    every_target_needs = {CEILING, CONFLUENT_ALO_1, CONFLUENT_EOS_1, QUIX, FASTSTREAM}
    assert every_target_needs <= set(quick.contenders) < set(full.contenders)


def test_records_can_still_be_chosen_in_quick_mode() -> None:
    assert _plan(_parse(["--quick", "--records", "100000"])).records == 100_000


@pytest.mark.parametrize(("partial", "written"), [(False, {"latest", "2026-12-02-full"}), (True, {"latest"})])
def test_only_a_complete_run_writes_the_dated_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool, written: set[str]
) -> None:
    (tmp_path / "2026-12-02-full.md").write_text("the complete run of that day")
    monkeypatch.setattr(report, "markdown", lambda _document: "table")
    monkeypatch.setattr(report, "draw", lambda _document, _directory: False)
    document = {"machine": {"date": "2026-12-02T14:38:00", "mode": "full", "partial": partial}}

    report.write(document, tmp_path)

    assert {path.stem for path in tmp_path.glob("*.json")} == written
    kept = (tmp_path / "2026-12-02-full.md").read_text()
    assert (kept == "table") is not partial


def test_the_table_says_which_contenders_ran_once() -> None:
    assert report._runs_text(3, [{"name": "ceiling", "runs": [{}] * 3}, {"name": "faststream", "runs": [{}]}]) == (
        "3 runs (1 for faststream)"
    )
    assert report._runs_text(3, [{"name": "ceiling", "runs": [{}] * 3}]) == "3 runs"
    assert report._runs_text(1, [{"name": "ceiling", "runs": [{}]}]) == "1 run"
