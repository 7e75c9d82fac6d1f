"""The benchmark's measure: CPU per record between the first and the last record appended, and its target row."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.run import _cpu_per_record


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
