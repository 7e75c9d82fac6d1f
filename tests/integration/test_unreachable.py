"""One-shot commands give up on a cluster they cannot use; a signal while waiting for one exits 0.

No broker is needed: the address has nothing listening. Both real clients are exercised.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration
CLIENTS = ["confluent", "kafka-python"]


def nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def pipeline(client: str, *args: str, **settings: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "BROKER_CLIENT": client,
            "KAFKA_BOOTSTRAP_SERVERS": nothing_listening(),
            "METRICS_PORT": "0",
            **settings,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("client", CLIENTS)
def test_topics_ensure_gives_up_after_the_configured_wait_naming_the_cause(client: str) -> None:
    started = time.monotonic()
    process = pipeline(client, "topics", "ensure", BROKER_WAIT_TIMEOUT="2")
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 1, output
    assert "broker unreachable: cannot reach Kafka at 127.0.0.1:" in output
    assert "gave up after 2s: BROKER_WAIT_TIMEOUT" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("client", CLIENTS)
def test_sigterm_while_waiting_for_the_cluster_at_start_exits_0(client: str) -> None:
    process = pipeline(client, "run", "--ensure-topics")
    time.sleep(4)  # a subprocess: it is inside the --ensure-topics retry loop by now
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "SIGTERM received" in output and "stopped while waiting for the cluster" in output
    assert "Traceback" not in output
