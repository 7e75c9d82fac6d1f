"""A long broker outage is not silence: a reminder at most once a minute, saying how long it has lasted."""

import random
import threading
from typing import Any

import pytest

from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from application.at_least_once import AtLeastOncePipeline
from application.errors import BrokerUnavailable
from application.retry import RetryPolicy
from application.settings import PipelineSettings
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0  # the backoff wait takes no real time; the fake clock says how long the outage lasts


class DownFor(InMemorySource):
    """Unavailable for ``polls`` polls, each ``step_s`` of fake time apart; then fine, and the run stops."""

    def __init__(self, broker: InMemoryBroker, clock: FakeClock, polls: int, step_s: float, stop: threading.Event):
        super().__init__(broker, "g")
        self._clock, self._polls, self._step_s, self._stop = clock, polls, step_s, stop

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        if self._polls > 0:
            self._polls -= 1
            self._clock.advance(self._step_s)
            raise BrokerUnavailable("cannot reach Kafka at memory: simulated outage")
        self._stop.set()
        return super().poll_batch(max_records, 0.0)


def test_a_long_outage_is_reminded_once_a_minute_with_its_duration(caplog: pytest.LogCaptureFixture) -> None:
    broker = InMemoryBroker(default_partitions=1)
    for topic in ("user-login", "processed-user-login", "user-login-dlq"):
        broker.create_topic(topic, 1)
    clock, stop = FakeClock(), threading.Event()
    source = DownFor(broker, clock, polls=61, step_s=5.0, stop=stop)  # 5 minutes, a failure every 5 s
    settings = PipelineSettings(poll_timeout_s=0.0, retry=RetryPolicy(limit=1, base_backoff_s=0.001))
    pipeline = AtLeastOncePipeline(
        source, InMemorySink(broker), LoginEventProcessor(), settings, clock=clock, rng=NoJitter()
    )

    with caplog.at_level("INFO", logger="application.loop"):
        pipeline.run(stop)

    lines = [record.getMessage() for record in caplog.records if record.name == "application.loop"]
    outage = [line for line in lines if "simulated outage" in line or "reachable again" in line]
    assert outage[0].endswith("; retrying with backoff (not ready meanwhile)")
    reminders = [line for line in outage if line.startswith("still ")]
    assert [line.rsplit(", for ", 1)[1] for line in reminders] == [
        f"{minutes}m00s; retrying" for minutes in (1, 2, 3, 4, 5)
    ]
    assert outage[-1] == "broker reachable again after 5m00s (61 failed attempt(s))"
