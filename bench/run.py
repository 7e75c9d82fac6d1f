"""The benchmark harness: ``python -m bench.run [--quick] [--records N] [--runs N] [--only NAME ...]``.

1. A broker: KAFKA_BOOTSTRAP_SERVERS, or a fresh ``scripts/kafka-local`` one on 127.0.0.1:29092
   (stopped at the end, whatever happens). The peers' venvs are prepared meanwhile.
2. The workload, preloaded once before any timing: N generated records in a 4-partition topic.
3. Throughput: for each run, for each contender (alternating), a fresh group and fresh output and DLQ
   topics; records/s = N / (t_last - t0), where t0 and t_last are the broker's LogAppendTime of the
   first and the last output or DLQ record; the run ends when the group's committed offsets reach the
   input's end offsets, and that moment minus t_last is the commit lag, reported apart. The contender's
   CPU between t0 and t_last, per record, too. Counts are then checked: output + DLQ == N (and DLQ ==
   the generator's defects, for those that route). Peak RSS (VmHWM) is read just before each contender
   is stopped.
4. Full mode only: peak RSS of the service at 100,000 records, and latency at a fixed offered load.
5. ``bench/results/latest.{json,md,png}`` and a dated copy of the json and md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from bench import report
from bench.contenders import (
    FULL,
    LATENCY,
    MEMORY,
    MEMORY_REFERENCE,
    PEERS,
    QUICK,
    QUICK_REPEATED,
    Contender,
    PeerVenv,
    Running,
    ensure_peer_venv,
)
from bench.report import Outcome, RunResult
from bench.workload import (
    PARTITIONS,
    REPO,
    BenchError,
    Broker,
    CommitWatch,
    Kafka,
    Lane,
    LoadProducer,
    Names,
    Preloaded,
    measure_latency,
    open_broker,
    preload,
)

# Quick mode reads as many records as full mode and saves its time elsewhere (one run of the slow
# contenders, fewer contenders, no latency or separate memory run), because the ratios depend on the
# input's size. librdkafka prefetches up to 16 MB (``queued.max.messages.kbytes``), roughly the first
# 90,000 of these records; they reach a contender at memory speed, the rest at the rate the broker serves
# them while it also takes the output. The ceiling ran about 210k records/s over its first 10% and 96k
# after; on 100,000 records there is hardly an "after", so the ceiling doubled while the CPU-bound
# service did not, and quick mode read 0.25 x ceiling against full mode's 0.80 x.
FULL_RECORDS = 1_000_000
MEMORY_SMALL_RECORDS = 100_000
FULL_RUNS = 3
SEED = 20_241_126
POLL_S = 0.1
STALL_TIMEOUT_S = 120.0  # no commit progress for this long: the run failed
STARTUP_TIMEOUT_S = 60.0  # nothing committed this long after the start: the run failed
LATENCY_RATE = 5_000
LATENCY_SECONDS = 60.0
LATENCY_DRAIN_TIMEOUT_S = 300.0
RESULTS = REPO / "bench" / "results"


class Interrupted(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Harness:
    def __init__(self, kafka: Kafka, names: Names, log_dir: Path, venvs: dict[str, PeerVenv]) -> None:
        self.kafka = kafka
        self.names = names
        self.log_dir = log_dir
        self.venvs = venvs
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def _launch(self, contender: Contender, lane: Lane, label: str) -> Running:
        python = None
        if contender.is_peer:
            venv = self.venvs[contender.client]
            if venv.python is None:
                raise BenchError(venv.error or f"no virtual environment for {contender.name}")
            python = venv.python
        return Running(contender, lane, self.kafka.bootstrap, self.log_dir / f"{label}.log", python)

    def _lane(self, contender: Contender, label: str, input_topic: str) -> Lane:
        lane = Lane(input_topic, self.names.topic(f"{label}-out"), self.names.topic(f"{label}-dlq"), "")
        lane.group = self.names.group(contender.name)
        self.kafka.create_topics([lane.output, lane.dlq], log_append_time=True)
        return lane

    def _retire(self, lane: Lane, *, input_too: bool = False) -> None:
        self.kafka.delete_topics([lane.output, lane.dlq] + ([lane.input] if input_too else []))
        self.kafka.delete_group(lane.group)

    def _wait_committed(
        self,
        running: Running,
        watch: CommitWatch,
        ends: list[int],
        timeout_s: float,
        half_way: RunResult | None = None,
        cpu: list[tuple[float, float]] | None = None,
    ) -> tuple[float | None, str | None]:
        """Poll the group's commits until they reach ``ends``: (t_end, None), or (None, why not).

        With ``half_way``, the contender's peak RSS is also sampled when half the input is committed, so
        the second half of a run shows whether memory grows with the records or stays where warm-up left it.
        With ``cpu``, every poll appends (wall time, the contender's CPU seconds so far) to it.
        """
        target = sum(ends)
        started = progress_at = time.monotonic()
        progress = 0
        deadline = started + timeout_s
        polls = 0
        while True:
            code = running.exit_code()
            if code is not None:
                return None, f"exited with status {code}"
            polls += 1
            if polls % 10 == 0 and running.worker_restarted():
                return None, "a worker crashed and was restarted"
            if cpu is not None:
                cpu.append((time.time(), running.cpu_seconds()))
            committed = watch.committed()
            now = time.time()
            if committed == ends:
                return now, None
            total = sum(committed)
            if half_way is not None and half_way.peak_rss_mb_half is None and total * 2 >= target:
                half_way.peak_rss_mb_half = running.peak_rss_mb()
            if total != progress:
                progress, progress_at = total, time.monotonic()
            elif total == 0 and time.monotonic() - started > STARTUP_TIMEOUT_S:
                return None, f"nothing committed {STARTUP_TIMEOUT_S:.0f}s after the start"
            elif time.monotonic() - progress_at > STALL_TIMEOUT_S:
                return None, f"no commit progress for {STALL_TIMEOUT_S:.0f}s ({total} of {target} committed)"
            if time.monotonic() > deadline:
                return None, f"timed out after {timeout_s:.0f}s ({total} of {target} committed)"
            time.sleep(POLL_S)

    # -- throughput -----------------------------------------------------------------------------------

    def throughput(self, contender: Contender, label: str, workload: Preloaded, *, small: bool = False) -> RunResult:
        topic = workload.small_topic if small else workload.topic
        records = workload.small_records if small else workload.records
        dead_letters = workload.small_dead_letters if small else workload.dead_letters
        assert topic is not None
        lane = self._lane(contender, label, topic)
        ends = self.kafka.end_offsets(topic)
        watch = CommitWatch(self.kafka.bootstrap, lane.group, topic, self.kafka.partitions(topic))
        result = RunResult("failed")
        running: Running | None = None
        try:
            launched = time.time()
            running = self._launch(contender, lane, label)
            cpu: list[tuple[float, float]] = []
            t_end, problem = self._wait_committed(
                running, watch, ends, timeout_s=STALL_TIMEOUT_S + records / 200, half_way=result, cpu=cpu
            )
            result.peak_rss_mb = running.peak_rss_mb()
            code = running.stop()
            result.log = str(running.log_path)
            if t_end is None:
                if code == 2:
                    result.status = "not supported"
                    result.error = running.tail(1) or "refused at start (exit status 2)"
                else:
                    result.error = f"{problem}; log: {running.tail()} (full log: {running.log_path})"
                return result
            first = self.kafka.first_append_ms([lane.output, lane.dlq])
            if first is None:
                result.error = "offsets were committed but nothing was published"
                return result
            last = self.kafka.last_append_ms([lane.output, lane.dlq])
            assert last is not None  # there is a first record
            t0, t_last = first / 1000, last / 1000
            result.seconds = max(t_last - t0, 0.001)
            result.commit_lag_s = t_end - t_last
            result.startup_s = t0 - launched
            result.records_per_s = records / result.seconds
            result.cpu_us_per_record = _cpu_per_record(cpu, t0, t_last, records)
            result.output_records = self.kafka.count(lane.output, transactional=contender.transactional)
            result.dlq_records = self.kafka.count(lane.dlq, transactional=contender.transactional)
            total = result.output_records + result.dlq_records
            if total != records:
                result.error = f"output {result.output_records} + DLQ {result.dlq_records} = {total}, not {records}"
            elif contender.routes and result.dlq_records != dead_letters:
                result.error = f"DLQ holds {result.dlq_records} records, the workload has {dead_letters} defective"
            else:
                result.status = "ok"
            return result
        finally:
            if running is not None and running.exit_code() is None:
                running.stop()
            watch.close()
            self._retire(lane)

    # -- latency --------------------------------------------------------------------------------------

    def latency(self, contender: Contender, outcome: Outcome, seconds: float) -> None:
        label = f"latency-{contender.name}"
        input_topic = self.names.topic(f"{label}-in")
        self.kafka.create_topics([input_topic], log_append_time=False)
        lane = self._lane(contender, label, input_topic)
        watch = CommitWatch(self.kafka.bootstrap, lane.group, input_topic, list(range(PARTITIONS)))
        running: Running | None = None
        try:
            running = self._launch(contender, lane, label)
            deadline = time.monotonic() + STALL_TIMEOUT_S
            while self.kafka.assigned_partitions(lane.group, input_topic) < PARTITIONS:
                if running.exit_code() is not None or time.monotonic() > deadline:
                    outcome.latency_error = f"never got its partitions assigned; log: {running.tail()}"
                    return
                time.sleep(0.2)
            # A warm-up record per partition must round-trip (and be committed) before the load starts.
            producer = LoadProducer(self.kafka, input_topic)
            producer.warm_up(seed=SEED + 1)
            _, problem = self._wait_committed(running, watch, self.kafka.end_offsets(input_topic), STALL_TIMEOUT_S)
            if problem:
                outcome.latency_error = f"warm-up: {problem}; log: {running.tail()}"
                return
            load = producer.offer(LATENCY_RATE, seconds, seed=SEED + 2)
            outcome.latency_offered_rate = load.achieved_rate
            ends = self.kafka.end_offsets(input_topic)
            _, problem = self._wait_committed(running, watch, ends, LATENCY_DRAIN_TIMEOUT_S)
            running.stop()
            if problem:
                outcome.latency_error = f"draining: {problem}; log: {running.tail()}"
                return
            latency = measure_latency(self.kafka, load, lane.output, lane.dlq)
            if latency.matched != load.produced:
                outcome.latency_error = f"matched {latency.matched} of {load.produced} records"
            outcome.latency = latency
        finally:
            if running is not None and running.exit_code() is None:
                running.stop()
            watch.close()
            self._retire(lane, input_too=True)


def _us(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _cpu_per_record(samples: list[tuple[float, float]], t0: float, t_last: float, records: int) -> float | None:
    """The contender's CPU between t0 and t_last, per record, in microseconds.

    From the last sample taken before the first record was appended to the first one taken after the
    last was: start-up (imports, group join) is left out, and at most one polling interval at either
    end is counted in.
    """
    before = [cpu for wall, cpu in samples if wall <= t0]
    after = [cpu for wall, cpu in samples if wall >= t_last]
    if not before or not samples:
        return None
    end = after[0] if after else samples[-1][1]
    return (end - before[-1]) / records * 1e6


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the main contenders, 3 runs of the fast ones and 1 of the rest, no latency, no separate memory run",
    )
    parser.add_argument("--records", type=int, help="records in the workload (default 1,000,000, quick mode too)")
    parser.add_argument("--runs", type=int, help="runs per contender (default 3; quick mode 3 or 1)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these contenders (names as in the table)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurements")
    parser.add_argument(
        "--latency-seconds", type=float, default=LATENCY_SECONDS, help="how long the offered load lasts (default 60)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the separate 100,000-record memory run")
    args = parser.parse_args(argv)
    known = {c.name for c in FULL}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(c.name for c in FULL)}")
    return args


@dataclass(frozen=True)
class Plan:
    mode: str
    records: int
    runs: int  # the most runs any contender gets
    contenders: list[Contender]
    latency_set: list[Contender]
    memory_small: bool  # the separate 100,000-record memory run
    once: frozenset[str] = frozenset()  # contenders run only once (quick mode's slow ones)

    def runs_of(self, contender: Contender) -> int:
        return 1 if contender.name in self.once else self.runs


def _plan(args: argparse.Namespace) -> Plan:
    records = args.records or FULL_RECORDS
    contenders = [c for c in (QUICK if args.quick else FULL) if not args.only or c.name in args.only]
    if args.only and args.quick:  # --only may name a contender that quick mode leaves out
        contenders = [c for c in FULL if c.name in args.only]
    once: frozenset[str] = frozenset()
    if args.quick and not args.runs:
        once = frozenset(c.name for c in contenders if c not in QUICK_REPEATED)
    return Plan(
        mode="quick" if args.quick else "full",
        records=records,
        runs=args.runs or FULL_RUNS,
        contenders=contenders,
        once=once,
        latency_set=[] if args.quick or args.no_latency else [c for c in LATENCY if c in contenders],
        memory_small=not args.quick and not args.no_memory and MEMORY in contenders and records > MEMORY_SMALL_RECORDS,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    plan = _plan(args)
    mode, records, runs, contenders = plan.mode, plan.records, plan.runs, plan.contenders
    latency_set, memory_small = plan.latency_set, plan.memory_small

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = REPO / ".cache" / "bench" / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    wall = time.monotonic()
    print(f"bench: {mode} mode, {records:,} records, {runs} run(s), {len(contenders)} contenders; logs in {log_dir}")

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    peer_names = sorted({c.client for c in contenders if c.client in PEERS})
    venv_jobs = {name: pool.submit(ensure_peer_venv, name, log_dir) for name in peer_names}
    broker: Broker | None = None
    kafka: Kafka | None = None
    outcomes = {c.name: Outcome(c) for c in contenders}
    try:
        broker = open_broker(log_dir)
        kafka = Kafka(broker.bootstrap)
        names = Names()
        harness = Harness(kafka, names, log_dir, {})
        harness.started = wall
        where = "local kafka-local" if broker.local else "external"
        harness.say(f"broker {broker.bootstrap} ({where}, Kafka {broker.kafka_version})")
        workload = preload(
            kafka, names.topic("input"), records, SEED,
            small_topic=names.topic("input-100k") if memory_small else None, small_records=MEMORY_SMALL_RECORDS,
        )  # fmt: skip
        harness.say(
            f"preloaded {workload.records:,} records ({workload.dead_letters:,} defective) "
            f"into {workload.topic} in {workload.seconds:.1f}s"
        )
        for name, job in venv_jobs.items():
            harness.venvs[name] = job.result()
            venv = harness.venvs[name]
            detail = venv.error or ", ".join(f"{k} {v}" for k, v in venv.versions.items())
            harness.say(f"venv {name}: {detail}")

        for run in range(1, runs + 1):
            for contender in contenders:
                outcome = outcomes[contender.name]
                if run > plan.runs_of(contender) or (outcome.status == "not supported" and outcome.runs):
                    continue
                try:
                    result = harness.throughput(contender, f"{contender.name}-run{run}", workload)
                except BenchError as error:
                    result = RunResult("failed", error=str(error))
                outcome.runs.append(result)
                if result.status == "ok":
                    assert result.records_per_s is not None and result.seconds is not None
                    harness.say(
                        f"{contender.name} run {run}/{plan.runs_of(contender)}: {result.records_per_s:,.0f} records/s "
                        f"({result.seconds:.2f}s, commit lag {result.commit_lag_s:.2f}s, "
                        f"CPU {_us(result.cpu_us_per_record)} us/record, start-up {result.startup_s:.1f}s, "
                        f"peak RSS {result.peak_rss_mb} MB)"
                    )
                else:
                    first_line = (result.error or "").replace("\n", " ")[:300]
                    harness.say(
                        f"{contender.name} run {run}/{plan.runs_of(contender)}: {result.status.upper()}: {first_line}"
                    )

        for contender in (MEMORY, MEMORY_REFERENCE):
            if contender.name not in outcomes:
                continue
            outcome = outcomes[contender.name]
            if memory_small:
                try:
                    result = harness.throughput(contender, f"{contender.name}-100k", workload, small=True)
                except BenchError as error:
                    result = RunResult("failed", error=str(error))
                outcome.peak_rss_mb_100k = result.peak_rss_mb if result.status == "ok" else None
                harness.say(f"{contender.name} at {MEMORY_SMALL_RECORDS:,} records: peak RSS {result.peak_rss_mb} MB")
            elif records == MEMORY_SMALL_RECORDS:
                outcome.peak_rss_mb_100k = outcome.peak_rss_mb

        for contender in latency_set:
            outcome = outcomes[contender.name]
            if outcome.status == "not supported":
                continue
            try:
                harness.latency(contender, outcome, args.latency_seconds)
            except BenchError as error:
                outcome.latency_error = str(error)
            if outcome.latency is not None:
                lat = outcome.latency
                harness.say(
                    f"{contender.name} latency at {LATENCY_RATE:,}/s: p50 {lat.p50_ms:.0f} ms, "
                    f"p99 {lat.p99_ms:.0f} ms, max {lat.max_ms:.0f} ms"
                    + (f" ({outcome.latency_error})" if outcome.latency_error else "")
                )
            else:
                harness.say(f"{contender.name} latency FAILED: {outcome.latency_error}")

        elapsed = time.monotonic() - wall
        context = report.Context(
            mode=mode, records=records, runs=runs, kafka_version=broker.kafka_version,
            broker="kafka-local" if broker.local else "external", peer_versions={
                name: venv.versions for name, venv in harness.venvs.items() if venv.versions
            }, latency_rate=LATENCY_RATE, latency_seconds=args.latency_seconds, seed=SEED, elapsed_s=elapsed,
            partial=bool(
                args.only or args.no_latency or args.no_memory or args.records or args.runs
                or args.latency_seconds != LATENCY_SECONDS
            ),
        )  # fmt: skip
        document = report.build(context, [outcomes[c.name] for c in contenders])
        table = report.write(document, RESULTS)
        print()
        print(table)
        drawn = ", latest.png" if (RESULTS / "latest.png").exists() else ""
        print(f"\nwrote {RESULTS / 'latest.json'}, latest.md{drawn} in {elapsed:.0f}s")
        return 0
    except Interrupted as stop:
        print(f"\nbench: interrupted by {stop}; stopping", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"\nbench: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        pool.shutdown(wait=False, cancel_futures=True)
        if kafka is not None:
            if broker is not None and not broker.local:
                kafka.cleanup()
            kafka.close()
        if broker is not None:
            broker.stop()
        elif not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            Broker("", "", local=True).stop()  # a start that failed half way


if __name__ == "__main__":
    sys.exit(main())
