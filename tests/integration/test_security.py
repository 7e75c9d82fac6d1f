"""Against the secured broker of scripts/kafka-secure (SASL_SSL with SCRAM-SHA-512, mutual TLS, ACLs).

Its addresses come from the SECURE_KAFKA_* variables that ``scripts/kafka-secure start`` prints
(.ci/run exports them). Topics are created, and records produced and read, through its PLAINTEXT
listener, where User:ANONYMOUS is a super user; the service itself uses the secured listeners.
"""

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

import pytest

from tests.contract.kits import ConfluentKit
from tests.integration.harness import ROOT, Dataset, Outcome, Service, Topics
from tests.support.kafka_broker import require_kafka

pytestmark = pytest.mark.integration

CLIENTS = ["confluent", "kafka-python"]
GUARANTEES = ["at-least-once", "exactly-once"]
_ENV = os.environ
if not _ENV.get("SECURE_KAFKA_SASL_SSL"):
    if require_kafka():
        pytest.fail("REQUIRE_KAFKA is set but SECURE_KAFKA_* is not: start scripts/kafka-secure", pytrace=False)
    pytest.skip('no secured broker (run: eval "$(scripts/kafka-secure start)")', allow_module_level=True)

CERTS = _ENV.get("SECURE_KAFKA_CERTS", "")
PASSWORD = _ENV.get("SECURE_KAFKA_PASSWORD", "")


def scram(user: str = "pipeline", password: str = PASSWORD, ca: str = "ca.pem") -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CA_LOCATION": f"{CERTS}/{ca}",
    }


def mutual_tls(user: str = "pipeline") -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_LOCATION": f"{CERTS}/ca.pem",
        "KAFKA_SSL_CERTIFICATE_LOCATION": f"{CERTS}/{user}.pem",
        "KAFKA_SSL_KEY_LOCATION": f"{CERTS}/{user}.key",
        "KAFKA_SSL_KEY_PASSWORD": _ENV.get("SECURE_KAFKA_KEY_PASSWORD", ""),
    }


def run_cli(command: list[str], settings: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``pipeline COMMAND`` in a child with these settings and none of this process's KAFKA_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update({"PYTHONPATH": str(ROOT), **settings})
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *command],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def admin_kit() -> ConfluentKit:
    return ConfluentKit(_ENV["SECURE_KAFKA_PLAINTEXT"])


def readiness(service: Service) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())["reason"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["reason"]
    except OSError:
        return 0, ""


def wait_not_ready_because(service: Service, expected: str, timeout_s: float = 45.0) -> str:
    deadline = time.monotonic() + timeout_s
    reason = ""
    while time.monotonic() < deadline:
        assert service.process.poll() is None, service.output()
        status, reason = readiness(service)
        if status == 503 and expected in reason:
            return reason
        time.sleep(0.2)
    raise AssertionError(f"/readyz never said {expected!r} (last: {reason!r})\n{service.output()}")


def problem_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("security", ["scram", "mutual-tls"])
def test_scram_and_mutual_tls_carry_records_end_to_end(admin_kit: ConfluentKit, client: str, security: str) -> None:
    topics = Topics.create(admin_kit)
    dataset = Dataset.produce(admin_kit, topics.input, 1_000)
    settings = scram() if security == "scram" else mutual_tls()
    bootstrap = _ENV["SECURE_KAFKA_SASL_SSL"] if security == "scram" else _ENV["SECURE_KAFKA_SSL"]
    service = Service(bootstrap, client, topics, "--max-messages", "1000", **settings)
    assert service.wait(120) == 0, service.output()
    outcome = Outcome.read(admin_kit, topics, dataset)
    assert outcome.missing(dataset) == [], service.output()
    assert PASSWORD not in service.output(tail=None)


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("case", "expected", "setting"),
    [
        ("wrong-password", 'authentication failed for user "pipeline" (SASL SCRAM-SHA-512)', "KAFKA_SASL_PASSWORD"),
        ("wrong-ca", "TLS handshake with", "KAFKA_SSL_CA_LOCATION"),
    ],
)
def test_a_refused_login_or_certificate_is_named_once_and_the_service_stays_up(
    admin_kit: ConfluentKit, client: str, case: str, expected: str, setting: str, guarantee: str
) -> None:
    topics = Topics.create(admin_kit)
    settings = scram(password="not-the-password") if case == "wrong-password" else scram(ca="rogue-ca.pem")
    settings["PROCESSING_GUARANTEE"] = guarantee
    service = Service(_ENV["SECURE_KAFKA_SASL_SSL"], client, topics, **settings)
    reason = wait_not_ready_because(service, expected)
    assert setting in reason
    time.sleep(8)  # it keeps retrying meanwhile: what does the log say over that while?
    assert service.process.poll() is None, service.output()
    service.signal(signal.SIGTERM)
    assert service.wait(30) == 0, service.output()
    output = service.output(tail=None)
    said = [line for line in output.splitlines() if expected in line and "application.loop" in line]
    assert len(said) == 1, output  # once; the reminder comes a minute later
    assert len(problem_lines(output)) <= 4, output  # no flood of the client's own reconnect lines
    assert "Traceback" not in output
    assert "not-the-password" not in output and PASSWORD not in output


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("client", CLIENTS)
def test_an_authenticated_user_without_acls_exits_3_naming_the_principal(
    admin_kit: ConfluentKit, client: str, guarantee: str
) -> None:
    topics = Topics.create(admin_kit)
    settings = scram(user="noacl", password=_ENV.get("SECURE_KAFKA_NOACL_PASSWORD", ""))
    settings["PROCESSING_GUARANTEE"] = guarantee
    service = Service(_ENV["SECURE_KAFKA_SASL_SSL"], client, topics, "--workers", "2", **settings)
    assert service.wait(60) == 3, service.output()
    output = service.output(tail=None)
    assert re.search(r'not authorized to \w+ [a-z-]+ "[^"]+" as User:noacl: grant it with kafka-acls', output), output
    assert "input topic missing" not in output
    assert "restarting" not in output  # the supervisor does not restart a worker refused by ACLs
    assert "Traceback" not in output


@pytest.mark.parametrize("client", CLIENTS)
def test_a_certificate_without_acls_exits_3_naming_the_certificate(admin_kit: ConfluentKit, client: str) -> None:
    topics = Topics.create(admin_kit)
    service = Service(_ENV["SECURE_KAFKA_SSL"], client, topics, **mutual_tls(user="noacl"))
    assert service.wait(60) == 3, service.output()
    output = service.output(tail=None)
    assert re.search(r'not authorized to \w+ [a-z-]+ "[^"]+" as the client certificate "CN=noacl"', output), output
    assert "Traceback" not in output


@pytest.mark.parametrize("client", CLIENTS)
def test_a_plaintext_client_at_a_tls_listener_is_told_to_check_the_security_protocol(
    admin_kit: ConfluentKit, client: str
) -> None:
    topics = Topics.create(admin_kit)
    service = Service(_ENV["SECURE_KAFKA_SSL"], client, topics)
    reason = wait_not_ready_because(service, "the broker closes every connection before answering", timeout_s=60.0)
    assert "KAFKA_SECURITY_PROTOCOL" in reason
    service.signal(signal.SIGTERM)
    assert service.wait(30) == 0, service.output()
    output = service.output(tail=None)
    said = [line for line in output.splitlines() if "closes every connection" in line and "application.loop" in line]
    assert len(said) == 1, output
    assert len(problem_lines(output)) <= 5, output
    assert "Traceback" not in output


def test_pipeline_config_never_shows_the_password() -> None:
    settings = {**scram(), **mutual_tls(), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    shown = run_cli(["config"], settings)
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    assert settings["KAFKA_SSL_KEY_PASSWORD"] not in shown.stdout + shown.stderr
    assert "sasl.password" in shown.stdout  # listed, masked


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("command", [["run", "--ensure-topics"], ["topics", "ensure"]])
def test_a_key_password_that_does_not_decrypt_the_key_is_a_setting_error(client: str, command: list[str]) -> None:
    done = run_cli(
        command,
        {
            "BROKER_CLIENT": client,
            "KAFKA_BOOTSTRAP_SERVERS": _ENV["SECURE_KAFKA_SSL"],
            "METRICS_PORT": "0",
            **mutual_tls(),
            "KAFKA_SSL_KEY_PASSWORD": "not-the-key-password",
        },
    )
    assert done.returncode == 2, done.stderr
    assert "KAFKA_SSL_KEY_PASSWORD" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not-the-key-password" not in done.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_with_a_refused_login_gives_up_naming_the_cause(client: str) -> None:
    started = time.monotonic()
    done = run_cli(
        ["produce", "--count", "100"],
        {
            "BROKER_CLIENT": client,
            "KAFKA_BOOTSTRAP_SERVERS": _ENV["SECURE_KAFKA_SASL_SSL"],
            "BROKER_WAIT_TIMEOUT": "8",
            **scram(password="not-the-password"),
        },
        timeout=90,
    )
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 60, "it gave up within about BROKER_WAIT_TIMEOUT"
    lines = [line for line in done.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(lines) == 1, done.stderr
    assert "BROKER_WAIT_TIMEOUT" in lines[0] and "authentication failed" in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr
