"""Helpers for tests that run the real service against the real broker and then audit every record."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from adapters.generator import LoginGenerator
from application import dlq_headers
from tests.contract.kits import AdapterKit

ROOT = Path(__file__).resolve().parents[2]
_CONSUMED = re.compile(r"^pipeline_records_consumed_total ([0-9.e+]+)$", re.M)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Topics:
    input: str
    output: str
    dlq: str
    group: str

    @classmethod
    def create(cls, kit: AdapterKit, partitions: int = 4) -> Topics:
        return cls(kit.topic(partitions), kit.topic(partitions), kit.topic(partitions), f"g-{uuid.uuid4().hex[:8]}")


@dataclass
class Dataset:
    """What was produced: every value, and the valid ones by user id (outputs are transformed)."""

    values: dict[bytes, str | None] = field(default_factory=dict)
    valid_by_user: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def produce(cls, kit: AdapterKit, topic: str, count: int, seed: int = 1) -> Dataset:
        dataset = cls()
        sink = kit.sink()
        for record in LoginGenerator(seed=seed).records(count):
            dataset.values[record.value] = record.expected_reason
            if record.expected_reason is None:
                dataset.valid_by_user[record.user_id] = record.value
            sink.publish(topic, record.key, record.value, (), lambda error: None)
            sink.poll(0)
        assert sink.flush(120)
        sink.close()
        assert len(dataset.values) == count, "generated values must be unique to be traceable"
        return dataset


@dataclass
class Outcome:
    outputs: Counter[str]  # user_id -> times published
    dead_letters: Counter[bytes]  # original value -> times dead-lettered
    reasons: Counter[str]

    @classmethod
    def read(cls, kit: AdapterKit, topics: Topics, dataset: Dataset, *, outputs_expected: int | None = None) -> Outcome:
        """Both topics, read on past the expected counts until quiet (see ``read_all``).

        ``outputs_expected`` overrides the number of valid inputs, for a test whose outputs all go to
        the DLQ instead; the DLQ is then expected to hold the rest.
        """
        valid = len(dataset.valid_by_user) if outputs_expected is None else outputs_expected
        outputs = kit.read_all(topics.output, valid, timeout_s=120)
        letters = kit.read_all(topics.dlq, len(dataset.values) - valid, timeout_s=120)
        reasons: Counter[str] = Counter()
        for letter in letters:
            reasons[(dict(letter.headers).get(dlq_headers.REASON) or b"").decode()] += 1
        return cls(
            Counter(json.loads(record.value or b"")["user_id"] for record in outputs),
            Counter(record.value or b"" for record in letters),
            reasons,
        )

    def missing(self, dataset: Dataset) -> list[bytes]:
        """Input values found neither on the output (by user id) nor on the DLQ (by value)."""
        lost = []
        for value, reason in dataset.values.items():
            if self.dead_letters[value]:
                continue
            if reason is None and self.outputs[json.loads(value)["user_id"]]:
                continue
            lost.append(value)
        return lost

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.outputs.values() if n > 1) + sum(
            n - 1 for n in self.dead_letters.values() if n > 1
        )

    def total(self) -> int:
        return sum(self.outputs.values()) + sum(self.dead_letters.values())


RUNNING: list[Service] = []  # every service started, so a failed test cannot leave one behind


class Service:
    """``pipeline run`` as a child process, observed through its own /metrics endpoint."""

    def __init__(self, bootstrap: str, client: str, topics: Topics, *args: str, **settings: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "BROKER_CLIENT": client,
                "INPUT_TOPIC": topics.input,
                "OUTPUT_TOPIC": topics.output,
                "DLQ_TOPIC": topics.dlq,
                "CONSUMER_GROUP": topics.group,
                "METRICS_PORT": str(self.port),
                "SESSION_TIMEOUT": "6000",
                "LOG_LEVEL": "info",
                **settings,
            }
        )
        self.log_path = Path(f"/tmp/pipeline-service-{self.port}.log")
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "run", *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        RUNNING.append(self)

    def consumed(self) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                match = _CONSUMED.search(response.read().decode())
        except OSError:
            return 0.0
        return float(match.group(1)) if match else 0.0

    def wait_consumed(self, at_least: float, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"service exited early ({self.process.returncode}):\n{self.output()}"
            if self.consumed() >= at_least:
                return
            time.sleep(0.1)
        raise AssertionError(f"service consumed only {self.consumed()} of {at_least} in {timeout_s}s\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def wait(self, timeout_s: float = 300) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def output(self, tail: int | None = 4000) -> str:
        """The service's log (its end, for assertion messages; all of it with ``tail=None``)."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text()
        return text if tail is None else text[-tail:]
