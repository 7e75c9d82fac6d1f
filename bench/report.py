"""Results: the per-contender figures, ``latest.json``, the Markdown table, the chart."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.contenders import Contender
from bench.workload import Latency

DASH = "\u2013"  # en dash, for ranges and missing figures
# "Not growing": the second half of a run adds at most 10 % to the peak RSS. (Comparing with a 100,000-record
# run instead measures warm-up: client buffers and in-flight records filling up to their bounds.)
RSS_GROWTH_TOLERANCE = 1.10
CPU_TARGET_US = 10.0  # issue 13: below the Go consumer this project replaces (12.0 us per record)
CEILING_RATIO_TARGET = 0.8  # issue 13: confluent at-least-once, 1 worker, against the ceiling
EOS_RATIO_TARGET = 0.7  # issue 13: exactly-once against at-least-once, same client and workers
LATENCY_P50_TARGET_MS = 10.0  # issue 13: at-least-once at 5,000 records/s offered
LATENCY_P99_TARGET_MS = 50.0


@dataclass
class RunResult:
    status: str  # ok | failed | not supported
    records_per_s: float | None = None
    seconds: float | None = None  # t_last - t0: first to last record appended to the output and DLQ
    commit_lag_s: float | None = None  # t_last -> the group's offsets committed up to the input's end
    cpu_us_per_record: float | None = None  # the contender's CPU (user + system) from t0 to t_last, per record
    startup_s: float | None = None  # launch -> first output record
    peak_rss_mb: float | None = None
    peak_rss_mb_half: float | None = None  # when half the input was committed
    output_records: int | None = None
    dlq_records: int | None = None
    error: str | None = None
    log: str | None = None


@dataclass
class Outcome:
    contender: Contender
    runs: list[RunResult] = field(default_factory=list)
    latency: Latency | None = None
    latency_error: str | None = None
    latency_offered_rate: float | None = None
    peak_rss_mb_100k: float | None = None

    @property
    def status(self) -> str:
        statuses = {run.status for run in self.runs}
        if "not supported" in statuses:
            return "not supported"
        if not self.runs or statuses != {"ok"}:
            return "failed"
        return "ok"

    def rates(self) -> list[float]:
        return [run.records_per_s for run in self.runs if run.status == "ok" and run.records_per_s]

    @property
    def median(self) -> float | None:
        rates = self.rates()
        return statistics.median(rates) if self.status == "ok" and rates else None

    def _median_of(self, name: str) -> float | None:
        values = [getattr(run, name) for run in self.runs if run.status == "ok" and getattr(run, name) is not None]
        return statistics.median(values) if self.status == "ok" and values else None

    @property
    def cpu_us_per_record(self) -> float | None:
        return self._median_of("cpu_us_per_record")

    @property
    def commit_lag_s(self) -> float | None:
        return self._median_of("commit_lag_s")

    @property
    def peak_rss_mb(self) -> float | None:
        peaks = [run.peak_rss_mb for run in self.runs if run.status == "ok" and run.peak_rss_mb]
        return max(peaks) if peaks else None

    @property
    def peak_rss_mb_half(self) -> float | None:
        """From the run with the highest final peak, so the two figures belong together."""
        runs = [run for run in self.runs if run.status == "ok" and run.peak_rss_mb and run.peak_rss_mb_half]
        return max(runs, key=lambda run: run.peak_rss_mb or 0).peak_rss_mb_half if runs else None

    @property
    def error(self) -> str | None:
        return next((run.error for run in self.runs if run.error), None)


@dataclass
class Context:
    mode: str
    records: int
    runs: int
    kafka_version: str
    broker: str
    peer_versions: dict[str, dict[str, str]]
    latency_rate: int
    latency_seconds: float
    seed: int
    elapsed_s: float
    partial: bool


# -- the JSON document -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _libraries(peer_versions: dict[str, dict[str, str]]) -> dict[str, str | None]:
    import confluent_kafka  # noqa: PLC0415

    libraries: dict[str, str | None] = {
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka-python": _version("kafka-python"),
        "orjson": _version("orjson"),
        "matplotlib": _version("matplotlib"),
    }
    for peer, versions in sorted(peer_versions.items()):
        for distribution, version in versions.items():
            if distribution == peer or distribution not in libraries:
                libraries[distribution] = version
            if distribution in libraries and libraries[distribution] != version:
                libraries[f"{distribution} ({peer} venv)"] = version
    return libraries


def _round(value: float | None, digits: int = 0) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits) if digits else float(round(value))


def build(context: Context, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    ceiling = next((o.median for o in outcomes if o.contender.client == "ceiling"), None)
    contenders = []
    for outcome in outcomes:
        c = outcome.contender
        median = outcome.median
        rates = outcome.rates()
        latency = outcome.latency
        contenders.append(
            {
                "name": c.name,
                "client": c.client,
                "guarantee": c.guarantee,
                "workers": c.workers,
                "records_per_s": _round(median),
                "ratio_to_ceiling": _round(median / ceiling, 3) if median and ceiling else None,
                "p50_ms": _round(latency.p50_ms, 1) if latency else None,
                "p99_ms": _round(latency.p99_ms, 1) if latency else None,
                "peak_rss_mb": outcome.peak_rss_mb,
                "cpu_us_per_record": _round(outcome.cpu_us_per_record, 1),
                "commit_lag_s": _round(outcome.commit_lag_s, 2),
                # extras
                "status": outcome.status,
                "error": outcome.error,
                "records_per_s_min": _round(min(rates)) if rates else None,
                "records_per_s_max": _round(max(rates)) if rates else None,
                "max_ms": _round(latency.max_ms, 1) if latency else None,
                "latency_records": latency.matched if latency else None,
                "latency_offered_rate": _round(outcome.latency_offered_rate),
                "latency_error": outcome.latency_error,
                "peak_rss_mb_100k": outcome.peak_rss_mb_100k,
                "peak_rss_mb_half": outcome.peak_rss_mb_half,
                "runs": [
                    {
                        "status": run.status,
                        "records_per_s": _round(run.records_per_s),
                        "seconds": _round(run.seconds, 3),
                        "commit_lag_s": _round(run.commit_lag_s, 3),
                        "cpu_us_per_record": _round(run.cpu_us_per_record, 2),
                        "startup_s": _round(run.startup_s, 2),
                        "peak_rss_mb": run.peak_rss_mb,
                        "output_records": run.output_records,
                        "dlq_records": run.dlq_records,
                        "error": run.error,
                    }
                    for run in outcome.runs
                ],
            }
        )
    document: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "kafka_version": context.kafka_version,
            "python": platform.python_version(),
            "libraries": _libraries(context.peer_versions),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": context.mode,
            "records": context.records,
            # extras
            "cpu_model": _cpu_model(),
            "memory_gb": _memory_gb(),
            "os": platform.platform(),
            "broker": context.broker,
            "runs": context.runs,
            "seed": context.seed,
            "latency_load": {"records_per_s": context.latency_rate, "seconds": context.latency_seconds},
            "elapsed_s": round(context.elapsed_s),
            "partial": context.partial,
        },
        "contenders": contenders,
    }
    document["targets"] = targets(document)
    return document


# -- targets ---------------------------------------------------------------------------------------------


def _by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["contenders"]}


def _target(
    text: str, ratio: float | None, threshold: float, *, at_most: bool = False, why: str = ""
) -> dict[str, Any]:
    if ratio is None:
        return {"target": text, "met": None, "ratio": None, "threshold": threshold, "note": why or "not measured"}
    met = ratio <= threshold if at_most else ratio >= threshold
    return {"target": text, "met": met, "ratio": round(ratio, 3), "threshold": threshold, "note": why}


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    rows = _by_name(document)

    def rate(name: str) -> float | None:
        row = rows.get(name)
        return row["records_per_s"] if row else None

    found = []
    alo, ceiling = rate("confluent-alo-1w"), rate("ceiling")
    found.append(
        _target(
            f"confluent at-least-once, 1 worker >= {CEILING_RATIO_TARGET:g} x ceiling",
            alo / ceiling if alo and ceiling else None,
            CEILING_RATIO_TARGET,
        )
    )
    peers = [r for r in (rate("quixstreams"), rate("faststream")) if r]
    found.append(
        _target(
            "confluent at-least-once, 1 worker >= 2 x the faster of Quix Streams and FastStream",
            alo / max(peers) if alo and peers else None,
            2.0,
        )
    )
    service = rows.get("confluent-alo-1w")
    cpu = service.get("cpu_us_per_record") if service else None
    found.append(
        _target(
            f"confluent at-least-once, 1 worker: CPU per record <= {CPU_TARGET_US:g} us (the Go consumer: 12.0)",
            cpu,
            CPU_TARGET_US,
            at_most=True,
            why=f"{cpu} us" if cpu is not None else "",
        )
    )
    for client, workers in (("confluent", 1), ("confluent", 2), ("kafka-python", 1), ("kafka-python", 2)):
        eos_name, alo_name = f"{client}-eos-{workers}w", f"{client}-alo-{workers}w"
        if eos_name not in rows:
            continue
        eos_row = rows[eos_name]
        eos, base = rate(eos_name), rate(alo_name)
        why = "exactly-once not supported by this client" if eos_row["status"] == "not supported" else ""
        found.append(
            _target(
                f"{client} exactly-once >= {EOS_RATIO_TARGET:g} x at-least-once "
                f"({workers} worker{'s' if workers > 1 else ''})",
                eos / base if eos and base else None,
                EOS_RATIO_TARGET,
                why=why,
            )
        )
    latency = rows.get("confluent-alo-1w")
    for figure, limit in (("p50_ms", LATENCY_P50_TARGET_MS), ("p99_ms", LATENCY_P99_TARGET_MS)):
        value = latency.get(figure) if latency else None
        found.append(
            _target(
                f"confluent at-least-once, 1 worker: latency {figure[:3]} <= {limit:g} ms at the offered load",
                value,
                limit,
                at_most=True,
                why=f"{value} ms" if value is not None else "",
            )
        )
    memory = rows.get("confluent-alo-1w")
    half = memory.get("peak_rss_mb_half") if memory else None
    full = memory["peak_rss_mb"] if memory else None
    records = document["machine"]["records"]
    ratio = full / half if full and half else None
    why = f"{full} MB after {records:,} records vs {half} MB after half of them" if ratio else "not measured"
    found.append(
        _target(
            f"peak RSS not growing with records (end vs half-way through the run: <= {RSS_GROWTH_TOLERANCE} x)",
            ratio,
            RSS_GROWTH_TOLERANCE,
            at_most=True,
            why=why,
        )
    )
    return found


# -- Markdown ----------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}{suffix}"


def _runs_text(runs: int, rows: list[dict[str, Any]]) -> str:
    """How many runs each median is of, naming the contenders that ran once (quick mode's slow ones)."""
    once = [row["name"] for row in rows if len(row["runs"]) == 1 and runs > 1]
    text = f"{runs} run{'s' if runs > 1 else ''}"
    return f"{text} (1 for {', '.join(once)})" if once else text


def markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    libs = machine["libraries"]
    lib_text = ", ".join(f"{name} {version}" for name, version in libs.items() if version)
    runs = machine["runs"]
    when = machine["date"].replace("T", " ")
    lines = [
        f"# Benchmark: {machine['mode']} mode, {machine['records']:,} records",
        "",
        f"- Date: {when}" + (" (partial run: flags given)" if machine.get("partial") else ""),
        f"- Machine: {machine['cores']} cores, {machine['cpu_model']}, {machine.get('memory_gb')} GB RAM, "
        f"{machine['os']}",
        f"- Python {machine['python']}; Apache Kafka {machine['kafka_version']} ({machine['broker']}, one broker "
        "on loopback, sharing the cores with the contenders and the harness)",
        f"- Libraries: {lib_text}",
        f"- Records/s: median of {_runs_text(runs, document['contenders'])} (min{DASH}max), contenders alternating; "
        "N / (LogAppendTime of the last output or DLQ record - LogAppendTime of the first); commit lag: from "
        "that last append until the group's offsets are committed up to the input's end (medians)",
        "- CPU us/record: the contender's user + system CPU (all its threads; summed over its processes for "
        "2 workers) from the first to the last record appended, per record (median)",
        "",
        f"| Contender | Client | Guarantee | Workers | Records/s (min{DASH}max) | x ceiling | CPU us/record "
        "| Commit lag s | p50 ms | p99 ms | max ms | Peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in document["contenders"]:
        if row["status"] == "ok":
            spread = ""
            if len(row["runs"]) > 1 and row["records_per_s_min"] is not None:
                spread = f" ({_num(row['records_per_s_min'])}{DASH}{_num(row['records_per_s_max'])})"
            throughput = _num(row["records_per_s"]) + spread
        else:
            throughput = f"**{row['status']}**"
        rss = _num(row["peak_rss_mb"], 1)
        if row["peak_rss_mb_100k"] is not None and machine["records"] > 100_000:
            rss += f" ({_num(row['peak_rss_mb_100k'], 1)} at 100k)"
        lines.append(
            f"| {row['name']} | {row['client']} | {row['guarantee']} | {row['workers']} | {throughput} "
            f"| {_num(row['ratio_to_ceiling'], 2)} | {_num(row.get('cpu_us_per_record'), 1)} "
            f"| {_num(row.get('commit_lag_s'), 2)} | {_num(row['p50_ms'])} | {_num(row['p99_ms'])} "
            f"| {_num(row['max_ms'])} | {rss} |"
        )
    notes = [
        f"- {row['name']}: {row['status']}: {row['error']}"
        for row in document["contenders"]
        if row["status"] != "ok" and row["error"]
    ]
    notes += [
        f"- {row['name']} latency: {row['latency_error']}" for row in document["contenders"] if row["latency_error"]
    ]
    if notes:
        lines += ["", *(note.replace("\n", " ")[:600] for note in notes)]
    load = machine["latency_load"]
    latency_note = (
        f"Latency (p50/p99/max): {load['records_per_s']:,} records/s offered for {load['seconds']:.0f} s into a "
        "fresh topic; per record, the output's broker LogAppendTime minus the input's CreateTime."
        if any(row["p50_ms"] is not None for row in document["contenders"])
        else "Latency: not measured in this run."
    )
    rows = _by_name(document)
    lines += ["", f"- {latency_note}"]
    for name in ("confluent-alo-1w", "ceiling"):
        row = rows.get(name)
        if row is None or row["peak_rss_mb_100k"] is None:
            continue
        text = f"Peak RSS of {name}: {_num(row['peak_rss_mb_100k'], 1)} MB at 100,000 records"
        if machine["records"] > 100_000:
            text += (
                f", {_num(row['peak_rss_mb'], 1)} MB at {machine['records']:,}"
                f" ({_num(row.get('peak_rss_mb_half'), 1)} MB half-way through that run)"
            )
        lines.append(f"- {text}.")
    lines.append(
        "- Peak RSS is VmHWM read just before the contender is stopped, summed over its processes "
        "(a supervisor and its workers for 2 workers); the highest of the runs."
    )
    lines += ["", "## Targets", "", "| Target | Result | Ratio |", "|---|---|---:|"]
    for target in document["targets"]:
        result = "not measured" if target["met"] is None else "met" if target["met"] else "**not met**"
        note = f" ({target['note']})" if target["note"] else ""
        lines.append(f"| {target['target']}{note} | {result} | {_num(target['ratio'], 2)} |")
    return "\n".join(lines) + "\n"


# -- chart -------------------------------------------------------------------------------------------------

_COLOURS = {
    "ceiling": "#7f7f7f",
    "confluent": "#1f77b4",
    "kafka-python": "#ff7f0e",
    "quixstreams": "#2ca02c",
    "faststream": "#9467bd",
}


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker  # noqa: PLC0415

    rows = [row for row in document["contenders"] if row["status"] == "ok"]
    with_latency = [row for row in rows if row["p50_ms"] is not None]
    panels = 2 if with_latency else 1
    figure, axes = pyplot.subplots(1, panels, figsize=(7 * panels, 0.45 * max(len(rows), 4) + 1.6), squeeze=False)
    machine = document["machine"]
    figure.suptitle(
        f"{machine['mode']} mode, {machine['records']:,} records, Kafka {machine['kafka_version']}, "
        f"{machine['cores']} cores ({machine['date'][:10]})",
        fontsize=10,
    )
    throughput = axes[0][0]
    names = [row["name"] for row in rows]
    medians = [row["records_per_s"] or 0 for row in rows]
    low = [max(0.0, m - (row["records_per_s_min"] or m)) for m, row in zip(medians, rows, strict=True)]
    high = [max(0.0, (row["records_per_s_max"] or m) - m) for m, row in zip(medians, rows, strict=True)]
    positions = range(len(rows))
    throughput.barh(
        list(positions), medians, xerr=[low, high], capsize=3,
        color=[_COLOURS.get(row["client"], "#333333") for row in rows],
    )  # fmt: skip
    throughput.set_yticks(list(positions), names)
    throughput.invert_yaxis()
    throughput.set_xlabel(f"records/s (median, min{DASH}max)")
    throughput.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    missing = [f"{row['name']}: {row['status']}" for row in document["contenders"] if row["status"] != "ok"]
    if missing:
        throughput.set_title("not shown: " + "; ".join(missing), fontsize=8, loc="left")
    throughput.grid(axis="x", alpha=0.3)
    for position, value, above in zip(positions, medians, high, strict=True):
        throughput.text(value + above, position, f"  {value:,.0f}", va="center", fontsize=8)
    throughput.set_xlim(0, max((m + h for m, h in zip(medians, high, strict=True)), default=1) * 1.18)
    if with_latency:
        latency = axes[0][1]
        names = [row["name"] for row in with_latency]
        positions = range(len(with_latency))
        latency.barh([p - 0.2 for p in positions], [row["p50_ms"] for row in with_latency], height=0.4, label="p50")
        latency.barh([p + 0.2 for p in positions], [row["p99_ms"] for row in with_latency], height=0.4, label="p99")
        latency.set_yticks(list(positions), names)
        latency.invert_yaxis()
        latency.set_xscale("log")
        latency.set_xlabel(f"latency ms at {machine['latency_load']['records_per_s']:,} records/s (log scale)")
        latency.legend()
        latency.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    pyplot.close(figure)


# -- files -------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def write(document: dict[str, Any], directory: Path) -> str:
    """latest.{json,md,png} plus, for a complete run, <date>-<mode>.{json,md}; returns the Markdown.

    A partial run (``--only``, ``--records``...) must not overwrite the day's record of a complete one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(document)
    data = json.dumps(document, indent=2) + "\n"
    names = ["latest"]
    if not document["machine"].get("partial"):
        names.append(f"{document['machine']['date'][:10]}-{document['machine']['mode']}")
    for name in names:
        _write(directory / f"{name}.json", data)
        _write(directory / f"{name}.md", text)
    draw(document, directory)
    return text


def draw(document: dict[str, Any], directory: Path) -> bool:
    """latest.png; without matplotlib (``make bench`` installs it), one line says so and no stale chart stays."""
    png = directory / "latest.png"
    temporary = directory / "latest.png.tmp"
    try:
        chart(document, temporary)
    except ImportError as missing:
        png.unlink(missing_ok=True)
        print(f"bench: no chart drawn ({missing}); `make bench` installs matplotlib", file=sys.stderr)
        return False
    temporary.replace(png)
    return True
