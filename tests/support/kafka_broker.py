"""Find or start an Apache Kafka broker for integration tests (stdlib only).

Resolution order of :func:`find_broker` / :func:`resolve_bootstrap`:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: use it; nothing is started or stopped.
   (If ``scripts/kafka-local status`` reports that very address, the handle can
   still stop/start that broker for restart tests; ``close()`` leaves it running.)
2. A Docker engine answers ``docker info`` and ``testcontainers.kafka`` imports:
   start a ``KafkaContainer`` in KRaft mode (image ``KAFKA_TEST_IMAGE`` if set);
   ``close()`` stops it.
3. ``scripts/kafka-local start --fresh`` on a private test port
   (``KAFKA_TEST_LOCAL_PORT``, default 19092; controller port + 1) with its own data
   dir (``.cache/kafka/test-data``), so a developer's broker on 9092 is never touched.
   ``close()`` stops it if this call started it (an already-running test broker is
   reused and left running).
4. Otherwise: no broker; the reason says why.

``tests/conftest.py`` turns it into the session fixtures ``kafka_broker`` and ``kafka_bootstrap``
(failing rather than skipping when ``REQUIRE_KAFKA`` is set; see :func:`require_kafka`).

A broker-restart fault test checks ``handle.restartable`` and calls
``handle.stop_broker()`` / ``handle.start_broker()`` (data and topics are kept).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "KAFKA_LOCAL",
    "BrokerHandle",
    "find_broker",
    "require_kafka",
    "resolve_bootstrap",
]

_log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
TEST_DATA_DIR = REPO_ROOT / ".cache" / "kafka" / "test-data"
DEFAULT_TEST_PORT = 19092
# A cold start downloads Kafka's jars with Maven first.
KAFKA_LOCAL_TIMEOUT_S = 600.0

Source = Literal["env", "testcontainers", "kafka-local"]


class BrokerHandle:
    """A usable broker. ``close()`` stops it only if it was started here."""

    def __init__(
        self,
        bootstrap_servers: str,
        source: Source,
        *,
        owned: bool,
        kafka_local_env: dict[str, str] | None = None,
        container: Any = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.source: Source = source
        self.owned = owned
        self._kafka_local_env = kafka_local_env
        self._container = container
        self._closed = False

    def __repr__(self) -> str:
        return f"BrokerHandle({self.bootstrap_servers!r}, source={self.source!r}, owned={self.owned})"

    @property
    def restartable(self) -> bool:
        """True if :meth:`stop_broker` / :meth:`start_broker` work (kafka-local brokers)."""
        return self._kafka_local_env is not None

    def stop_broker(self, *, crash: bool = False) -> None:
        """Stop the broker, keeping its data (for broker-restart fault tests); ``crash`` kills it at once."""
        _run_kafka_local(["stop", "--crash"] if crash else ["stop"], self._require_restartable())

    def start_broker(self) -> None:
        """Start the broker again after :meth:`stop_broker`; returns once it serves requests."""
        address = _run_kafka_local(["start"], self._require_restartable())
        if address != self.bootstrap_servers:
            raise RuntimeError(f"broker came back on {address}, expected {self.bootstrap_servers}")

    def close(self) -> None:
        """Stop the broker if this module started it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if not self.owned:
            return
        if self._container is not None:
            self._container.stop()
        elif self._kafka_local_env is not None:
            _run_kafka_local(["stop"], self._kafka_local_env)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_restartable(self) -> dict[str, str]:
        if self._kafka_local_env is None:
            raise RuntimeError(f"broker from {self.source} ({self.bootstrap_servers}) cannot be restarted")
        return self._kafka_local_env


def require_kafka() -> bool:
    """True if env ``REQUIRE_KAFKA`` is "1"/"true"/"yes": a missing broker must fail, not skip."""
    return os.environ.get("REQUIRE_KAFKA", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_bootstrap() -> BrokerHandle | None:
    """Like :func:`find_broker` but without the reason."""
    return find_broker()[0]


def find_broker() -> tuple[BrokerHandle | None, str]:
    """Return ``(handle, description)``, or ``(None, reason)`` if no broker can be had."""
    env_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env_servers:
        return _from_env(env_servers), f"KAFKA_BOOTSTRAP_SERVERS={env_servers}"

    reasons = ["KAFKA_BOOTSTRAP_SERVERS is not set"]
    docker_reason = _docker_unavailable_reason()
    if docker_reason is None:
        handle, why = _start_testcontainer()
        if handle is not None:
            return handle, why
        reasons.append(why)
    else:
        reasons.append(docker_reason)

    handle, why = _start_kafka_local()
    if handle is not None:
        return handle, why
    reasons.append(why)
    return None, "; ".join(reasons)


# ---------------------------------------------------------------- internals


def _normalise(address: str) -> str:
    return address.strip().replace("localhost:", "127.0.0.1:")


def _from_env(servers: str) -> BrokerHandle:
    env = dict(os.environ)
    restart_env: dict[str, str] | None = None
    if "," not in servers and KAFKA_LOCAL.is_file():
        try:
            status = subprocess.run(
                [str(KAFKA_LOCAL), "status"], env=env, check=False, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            status = None
        if status is not None and status.returncode == 0:
            running = status.stdout.strip().splitlines()[-1:] or [""]
            if _normalise(running[0]) == _normalise(servers):
                restart_env = env
    return BrokerHandle(servers, "env", owned=False, kafka_local_env=restart_env)


def _docker_unavailable_reason() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker: no docker CLI"
    try:
        result = subprocess.run([docker, "info"], check=False, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker: 'docker info' failed ({exc})"
    if result.returncode != 0:
        return "docker: no Docker engine answers 'docker info'"
    return None


def _start_testcontainer() -> tuple[BrokerHandle | None, str]:
    try:
        module = importlib.import_module("testcontainers.kafka")
    except ImportError:
        return None, "docker: engine found but the 'testcontainers' package is not installed"
    # Failures of Docker/testcontainers mean "try the next option", not "crash the session".
    errors: tuple[type[Exception], ...] = (OSError, RuntimeError, ValueError, AttributeError, TypeError)
    with contextlib.suppress(ImportError, AttributeError):
        errors = (*errors, importlib.import_module("docker.errors").DockerException)
    image = os.environ.get("KAFKA_TEST_IMAGE")
    container: Any = None
    try:
        container = module.KafkaContainer(image) if image else module.KafkaContainer()
        container = container.with_kraft()
        container.start()
        servers = str(container.get_bootstrap_server())
    except errors as exc:
        _log.warning("testcontainers KafkaContainer failed to start", exc_info=True)
        if container is not None:
            with contextlib.suppress(*errors):
                container.stop()
        return None, f"testcontainers: KafkaContainer failed to start ({exc!r})"
    return BrokerHandle(servers, "testcontainers", owned=True, container=container), (
        f"testcontainers KafkaContainer at {servers}"
    )


def _test_broker_env() -> dict[str, str]:
    env = dict(os.environ)
    port = int(env.get("KAFKA_TEST_LOCAL_PORT", str(DEFAULT_TEST_PORT)))
    env["KAFKA_LOCAL_PORT"] = str(port)
    env["KAFKA_LOCAL_CONTROLLER_PORT"] = str(port + 1)
    env["KAFKA_LOCAL_DIR"] = str(TEST_DATA_DIR)
    return env


def _start_kafka_local() -> tuple[BrokerHandle | None, str]:
    if not KAFKA_LOCAL.is_file():
        return None, f"kafka-local: {KAFKA_LOCAL} not found"
    env = _test_broker_env()
    try:
        status = subprocess.run(
            [str(KAFKA_LOCAL), "status"], env=env, check=False, capture_output=True, text=True, timeout=30
        )
        if status.returncode == 0 and status.stdout.strip():
            address = status.stdout.strip().splitlines()[-1]
            handle = BrokerHandle(address, "kafka-local", owned=False, kafka_local_env=env)
            return handle, f"kafka-local test broker already running at {address} (left running)"
        address = _run_kafka_local(["start", "--fresh"], env)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return None, f"kafka-local: {exc}"
    handle = BrokerHandle(address, "kafka-local", owned=True, kafka_local_env=env)
    return handle, f"kafka-local test broker started at {address}"


def _run_kafka_local(args: list[str], env: dict[str, str]) -> str:
    """Run scripts/kafka-local; return the last stdout line; raise RuntimeError on failure."""
    result = subprocess.run(
        [str(KAFKA_LOCAL), *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=KAFKA_LOCAL_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"'kafka-local {' '.join(args)}' exited {result.returncode}:\n{tail}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""
