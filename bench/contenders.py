"""Who is measured, and how each one is started, observed and stopped as a child process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import REPO, Lane

VENVS = REPO / ".cache" / "bench" / "venvs"
WORK_DIR = REPO / ".cache" / "bench" / "work"  # the service's cwd: no stray ./.env changes its settings
PROJECT_BIN = Path(sys.executable).parent


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    client: str  # ceiling | confluent | kafka-python | quixstreams | faststream
    guarantee: str  # none | at-least-once | exactly-once
    workers: int = 1

    @property
    def transactional(self) -> bool:
        return self.guarantee == "exactly-once"

    @property
    def is_peer(self) -> bool:
        return self.client in PEERS

    @property
    def routes(self) -> bool:
        """Whether it applies the rules (the ceiling copies everything to the output)."""
        return self.client != "ceiling"


def _project(client: str, guarantee: str, workers: int) -> Contender:
    short = {"at-least-once": "alo", "exactly-once": "eos"}[guarantee]
    return Contender(f"{client}-{short}-{workers}w", client, guarantee, workers)


CEILING = Contender("ceiling", "ceiling", "none")
CONFLUENT_ALO_1 = _project("confluent", "at-least-once", 1)
CONFLUENT_EOS_1 = _project("confluent", "exactly-once", 1)
QUIX = Contender("quixstreams", "quixstreams", "at-least-once")
FASTSTREAM = Contender("faststream", "faststream", "at-least-once")

FULL: tuple[Contender, ...] = (
    CEILING,
    CONFLUENT_ALO_1,
    _project("confluent", "at-least-once", 2),
    CONFLUENT_EOS_1,
    _project("confluent", "exactly-once", 2),
    _project("kafka-python", "at-least-once", 1),
    _project("kafka-python", "at-least-once", 2),
    _project("kafka-python", "exactly-once", 1),
    QUIX,
    FASTSTREAM,
)
QUICK: tuple[Contender, ...] = (
    CEILING,
    CONFLUENT_ALO_1,
    CONFLUENT_EOS_1,
    _project("kafka-python", "at-least-once", 1),
    QUIX,
    FASTSTREAM,
)
# Quick mode runs these three times and the rest once: the targets' ratios are theirs, one run of the
# service ranged 80-95k records/s within one full run, and each of them takes ~10 s where a slow peer takes ~55.
QUICK_REPEATED: tuple[Contender, ...] = (CEILING, CONFLUENT_ALO_1, CONFLUENT_EOS_1)
LATENCY: tuple[Contender, ...] = (CEILING, CONFLUENT_ALO_1, CONFLUENT_EOS_1, QUIX, FASTSTREAM)
MEMORY = CONFLUENT_ALO_1
MEMORY_REFERENCE = CEILING  # measured at both sizes too: what the client alone does to peak RSS


# -- the peers' virtual environments ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerEnv:
    module: str
    requirements: tuple[str, ...]
    versions_of: tuple[str, ...]  # distributions whose resolved versions go into the results


PEERS: dict[str, PeerEnv] = {
    # quixstreams 3.x pins confluent-kafka<2.13, which the project's 2.16 cannot share a venv with.
    "quixstreams": PeerEnv(
        "bench.peers.quixstreams_peer", ("quixstreams", "orjson"), ("quixstreams", "confluent-kafka", "orjson")
    ),
    # aiokafka reads and writes LZ4 (the project's output compression) only with its lz4 extra.
    "faststream": PeerEnv(
        "bench.peers.faststream_peer",
        ("faststream[kafka]", "aiokafka[lz4]", "orjson"),
        ("faststream", "aiokafka", "cramjam", "orjson"),
    ),
}


@dataclass
class PeerVenv:
    python: Path | None
    versions: dict[str, str]
    error: str | None = None
    seconds: float = 0.0


def _peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(REPO)
    return env


def ensure_peer_venv(name: str, log_dir: Path) -> PeerVenv:
    """Create (once, then reuse) ``.cache/bench/venvs/<name>`` and check that the peer imports there."""
    peer = PEERS[name]
    started = time.monotonic()
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(peer.requirements)
    log_path = log_dir / f"venv-{name}.log"
    with log_path.open("w") as log:

        def step(*command: str) -> bool:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode == 0

        if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
            stamp.unlink(missing_ok=True)
            ok = step(sys.executable, "-m", "venv", "--clear", str(venv)) and step(
                str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peer.requirements
            )
            if not ok:
                return PeerVenv(None, {}, f"could not install {' '.join(peer.requirements)} (see {log_path})")
            stamp.write_text(wanted)
    script = (
        "import importlib.metadata as m, json, sys\n"
        f"import {peer.module}\n"
        f"print(json.dumps({{n: m.version(n) for n in {list(peer.versions_of)!r}}}))\n"
    )
    probe = subprocess.run(
        [str(python), "-c", script], env=_peer_env(), cwd=REPO, capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return PeerVenv(None, {}, f"{peer.module} does not import in {venv}: {probe.stderr.strip()[-800:]}")
    return PeerVenv(python, json.loads(probe.stdout.strip().splitlines()[-1]), seconds=time.monotonic() - started)


# -- one contender as a child process --------------------------------------------------------------------


def _clean_environment() -> dict[str, str]:
    """The caller's environment without anything that would configure the service or its clients."""
    from entrypoints.config import SETTINGS  # noqa: PLC0415 - the project's own list of setting names

    names = {name for setting in SETTINGS for name in setting.names}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in names and not key.startswith("KAFKA_") and key not in ("ENV_FILE", "PYTHONPATH")
    }


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class Running:
    """A started contender: its process (group), its log, its memory."""

    def __init__(
        self, contender: Contender, lane: Lane, bootstrap: str, log_path: Path, peer_python: Path | None = None
    ) -> None:
        self.contender = contender
        self.log_path = log_path
        env = _clean_environment()
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "INPUT_TOPIC": lane.input,
                "OUTPUT_TOPIC": lane.output,
                "DLQ_TOPIC": lane.dlq,
                "CONSUMER_GROUP": lane.group,
                "PYTHONUNBUFFERED": "1",
            }
        )
        cwd = REPO
        if contender.client == "ceiling":
            command = [sys.executable, "-m", "bench.ceiling"]
        elif contender.is_peer:
            if peer_python is None:
                raise ValueError(f"{contender.name} needs its virtual environment")
            command = [str(peer_python), "-m", PEERS[contender.client].module]
            env["PYTHONPATH"] = str(REPO)
        else:
            command = [str(PROJECT_BIN / "pipeline"), "run"]
            env.update(
                {
                    "BROKER_CLIENT": contender.client,
                    "PROCESSING_GUARANTEE": contender.guarantee,
                    "WORKERS": str(contender.workers),
                    "METRICS_PORT": "0",
                    "LOG_LEVEL": "warning",
                }
            )
            WORK_DIR.mkdir(parents=True, exist_ok=True)
            cwd = WORK_DIR
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.process.pid
        self._tree: list[int] = [self.pid]
        self._tree_at = 0.0

    def exit_code(self) -> int | None:
        return self.process.poll()

    def tree(self) -> list[int]:
        children = _children()
        found, stack = [], [self.pid]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, ()))
        return found

    def peak_rss_mb(self) -> float | None:
        """VmHWM summed over the contender's processes (one, or a supervisor and its workers)."""
        total = sum(_vm_hwm_kb(pid) for pid in self.tree())
        return round(total / 1024, 1) if total else None

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) used so far, summed over the contender's processes.

        For one worker that is the main process: the consumer loop plus its client library's threads.
        """
        now = time.monotonic()
        if now - self._tree_at > 1.0:  # walking /proc costs the harness more than reading a few stat files
            self._tree, self._tree_at = self.tree(), now
        return sum(_cpu_ticks(pid) for pid in self._tree) / _CLOCK_TICKS

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM to the main process (a supervisor forwards it), then SIGKILL to the whole group."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._log.write(f"\n[bench] no exit {timeout_s:.0f}s after SIGTERM: SIGKILL\n")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()
        return self.process.returncode

    def worker_restarted(self) -> bool:
        """Whether ``pipeline run --workers N`` has logged restarting a crashed worker."""
        if self.contender.workers < 2 or self._log.closed:
            return False
        self._log.flush()
        try:
            return "; restarting in " in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def tail(self, lines: int = 3) -> str:
        """The last lines of the contender's log, on one line."""
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.strip().splitlines()[-lines:]]
        return " | ".join(line for line in kept if line)[-1200:]
