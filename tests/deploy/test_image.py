"""The container image, run the way k8s/deployment.yaml runs the pod, against the real broker.

Needs a Docker engine and the image (``scripts/docker-local start && scripts/docker-local build``;
``.ci/run`` does both and sets REQUIRE_DOCKER=1, so that these tests fail there instead of skipping).
The image's name is $PIPELINE_IMAGE (default user-login-pipeline:ci). The containers use the host's
network (the engine has no bridge), so each one gets its own METRICS_PORT and its own topics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from application.messages import ConsumedRecord
from tests.contract.kits import ConfluentKit
from tests.deploy.test_deploy_files import (
    k8s_environment,
    pipeline_container,
    pod_spec,
    required,
    resolve_container_port,
)
from tests.integration.harness import Dataset, Outcome, Topics, free_port
from tests.support.kafka_broker import require_kafka

pytestmark = pytest.mark.integration

IMAGE = os.environ.get("PIPELINE_IMAGE", "user-login-pipeline:ci")
# What connects the pod to *its* cluster (SASL_SSL, the CA file, the credentials): replaced by the
# test broker's address. Every other ConfigMap and Secret variable reaches the container unchanged.
CONNECTION = re.compile(r"KAFKA_(BOOTSTRAP_SERVERS|SECURITY_PROTOCOL|SASL_.*|SSL_.*)")
# Nothing a developer or a build needs may be in the image.
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")
DEV_MODULES = ("pytest", "mypy", "ruff", "hypothesis", "importlinter", "testcontainers", "yaml")
MAX_IMAGE_BYTES = 400_000_000


def unavailable(reason: str) -> None:
    if required("REQUIRE_DOCKER"):
        pytest.fail(f"REQUIRE_DOCKER=1: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker() -> str:
    cli = os.environ.get("DOCKER_LOCAL_CLI") or shutil.which("docker")
    if cli is None:
        unavailable("no docker client is installed (Debian: apt-get install docker.io)")
    assert cli is not None
    probe = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        unavailable(f"no Docker engine answers `docker info` (start one: scripts/docker-local start): {probe.stderr}")
    if subprocess.run([cli, "image", "inspect", IMAGE], capture_output=True, timeout=30, check=False).returncode:
        unavailable(f"the image {IMAGE} is not built (scripts/docker-local build)")
    return cli


def run(docker: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout, check=False)


def pod_flags() -> list[str]:
    """docker run's flags for what the Deployment's pod and container securityContext, volumes and resources say."""
    container = pipeline_container()
    context = {**(pod_spec().get("securityContext") or {}), **(container.get("securityContext") or {})}
    flags = ["--network", "host", "--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={capability}" for capability in context["capabilities"]["drop"]]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod_spec().get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:  # writable scratch space, the only one the pod has
            size = str(volume["emptyDir"].get("sizeLimit", "64Mi")).replace("Mi", "m")
            flags += ["--tmpfs", f"{mount['mountPath']}:size={size},uid={context['runAsUser']}"]
    limits = container["resources"]["limits"]
    flags += ["--cpus", str(limits["cpu"]), "--memory", str(limits["memory"]).replace("Mi", "m")]
    return flags


def pod_environment(bootstrap: str, topics: Topics, metrics_port: int) -> dict[str, str]:
    environment = {name: value for name, value in k8s_environment().items() if not CONNECTION.fullmatch(name)}
    assert {"INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "CONSUMER_GROUP", "METRICS_PORT"} <= set(environment)
    environment.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        INPUT_TOPIC=topics.input,
        OUTPUT_TOPIC=topics.output,
        DLQ_TOPIC=topics.dlq,
        CONSUMER_GROUP=topics.group,
        METRICS_PORT=str(metrics_port),  # the host's network: each container needs a port of its own
    )
    return environment


def secret_mount(volume_name: str) -> str:
    """Where the Deployment mounts the single item of the Secret volume ``volume_name``."""
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == volume_name)
    mount = next(m for m in pipeline_container()["volumeMounts"] if m["name"] == volume_name)
    [item] = volume["secret"]["items"]
    return f"{mount['mountPath']}/{item['path']}"


def env_flags(environment: Mapping[str, str]) -> list[str]:
    return [flag for name, value in environment.items() for flag in ("-e", f"{name}={value}")]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def metric(text: str, name: str) -> float:
    """The sum over every series of ``name`` (0 when it has none yet)."""
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class Pod:
    """One `pipeline run` container, started with the Deployment's flags, environment and args."""

    def __init__(
        self, docker: str, bootstrap: str, topics: Topics, *, secured: dict[str, str] | None = None, ca: str = ""
    ) -> None:
        """``secured``: the ConfigMap's connection settings kept, with these values (the Secret's, the address)."""
        self.docker = docker
        self.name = f"pipeline-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.grace_s = float(pod_spec()["terminationGracePeriodSeconds"])
        container = pipeline_container()
        assert resolve_container_port(container, container["readinessProbe"]["httpGet"]["port"]) == int(
            k8s_environment()["METRICS_PORT"]
        ), "the probes ask METRICS_PORT"
        environment = pod_environment(bootstrap, topics, self.port)
        mounts: list[str] = []
        if secured is not None:
            environment = {**k8s_environment(), **environment, **secured}
            mounts = ["--volume", f"{ca}:{secret_mount('kafka-ca')}:ro"]
        started = run(
            docker, "run", "--detach", "--name", self.name, *pod_flags(), "--stop-timeout", str(int(self.grace_s)),
            *mounts, *env_flags(environment), IMAGE, *container["args"],
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

    def inspect(self, template: str) -> str:
        return run(self.docker, "inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        result = run(self.docker, "logs", "--tail", "60", self.name)
        return result.stdout + result.stderr

    def probe(self, kind: str) -> tuple[int, str]:
        return get(self.port, pipeline_container()[kind]["httpGet"]["path"])

    def metrics(self) -> str:
        return get(self.port, "/metrics")[1]

    def wait_for(self, what: str, condition: Any, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.inspect("{{.State.Running}}") == "true", f"the container exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"not {what} after {timeout_s:g}s:\n{self.logs()}"
            time.sleep(0.5)

    def stop(self) -> tuple[int, float]:
        """``docker stop`` (SIGTERM, then SIGKILL after the grace period): the exit status and the time it took."""
        started = time.monotonic()
        stopped = run(self.docker, "stop", "--time", str(int(self.grace_s)), self.name, timeout=self.grace_s + 30)
        assert stopped.returncode == 0, stopped.stderr
        return int(self.inspect("{{.State.ExitCode}}")), time.monotonic() - started

    def remove(self) -> None:
        run(self.docker, "rm", "--force", self.name)


@pytest.fixture
def pods(docker: str) -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.remove()


def one_shot(docker: str, environment: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``docker run --rm IMAGE args...`` with the pod's flags, as a Job or `kubectl run` would."""
    return run(docker, "run", "--rm", *pod_flags(), *env_flags(environment), IMAGE, *args, timeout=180)


def audit(inputs: list[ConsumedRecord], outputs: list[ConsumedRecord], letters: list[ConsumedRecord]) -> None:
    """Each input record is on the output (by user id) or on the DLQ (by value), exactly once."""
    published = Counter(json.loads(record.value or b"")["user_id"] for record in outputs)
    dead = Counter(record.value or b"" for record in letters)
    lost = []
    for record in inputs:
        value = record.value or b""
        if dead[value]:
            continue
        if not published[json.loads(value)["user_id"]]:
            lost.append(value)
    assert not lost, f"{len(lost)} of {len(inputs)} records lost, e.g. {lost[:2]}"
    repeated = sum(n - 1 for n in published.values() if n > 1) + sum(n - 1 for n in dead.values() if n > 1)
    assert repeated == 0, f"{repeated} records published twice"
    assert published.total() + dead.total() == len(inputs)


def test_the_image_runs_as_the_deployment_runs_the_pod(docker: str, kafka_bootstrap: str, pods: list[Pod]) -> None:
    kit = ConfluentKit(kafka_bootstrap)
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(f"image-in-{suffix}", f"image-out-{suffix}", f"image-dlq-{suffix}", f"image-g-{suffix}")
    environment = pod_environment(kafka_bootstrap, topics, free_port())
    partitions = int(environment["TOPIC_PARTITIONS"])

    # `topics ensure`, as the ConfigMap configures it (one broker here: replication factor 1).
    ensured = one_shot(docker, {**environment, "TOPIC_REPLICATION_FACTOR": "1"}, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    from confluent_kafka.admin import AdminClient

    described = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=30).topics
    for topic in (topics.input, topics.output, topics.dlq):
        assert len(described[topic].partitions) == partitions, topic

    pod = Pod(docker, kafka_bootstrap, topics)
    pods.append(pod)
    # The image's HEALTHCHECK asks /healthz, as the liveness and startup probes do.
    pod.wait_for("healthy", lambda: pod.inspect("{{.State.Health.Status}}") == "healthy")
    assert pod.probe("livenessProbe")[0] == 200
    pod.wait_for("ready", lambda: pod.probe("readinessProbe")[0] == 200)
    assert json.loads(pod.probe("readinessProbe")[1]) == {"ready": True, "reason": "ok"}
    assert all(json.loads(line)["level"] for line in pod.logs().splitlines() if line.startswith("{")), "JSON logs"

    # `produce`, in a container of its own, while the pod consumes; the pod is stopped midway.
    count = 20_000
    producer = subprocess.Popen(
        [docker, "run", "--rm", *pod_flags(), *env_flags(environment), IMAGE,
         "produce", "--count", str(count), "--rate", "4000", "--seed", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pod.wait_for("consuming", lambda: metric(pod.metrics(), "pipeline_records_consumed_total") >= 2000, 120)
        status, took = pod.stop()
        assert status == 0, f"docker stop: exit {status}\n{pod.logs()}"
        assert took < pod.grace_s, f"stopped in {took:.1f}s, beyond terminationGracePeriodSeconds"
        _, produced_log = producer.communicate(timeout=180)
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 0, produced_log
    assert f"sent {count:,} records" in produced_log and f"{count:,} acknowledged" in produced_log, produced_log

    # A replacement pod in the same group finishes the rest; then every record is accounted for once.
    second = Pod(docker, kafka_bootstrap, topics)
    pods.append(second)

    def drained() -> bool:
        text = second.metrics()
        return (
            metric(text, "pipeline_records_consumed_total") > 0
            and "pipeline_consumer_lag{" in text
            and metric(text, "pipeline_consumer_lag") == 0
            and metric(text, "pipeline_records_in_flight") == 0
        )

    second.wait_for("drained", drained, 120)
    status, _ = second.stop()
    assert status == 0, second.logs()
    inputs = kit.read_all(topics.input, count, timeout_s=120)
    assert len(inputs) == count
    outputs = kit.read_all(topics.output, 1, timeout_s=120)
    letters = kit.read_all(topics.dlq, 1, timeout_s=120)
    audit(inputs, outputs, letters)


def test_the_image_holds_no_compiler_and_no_dev_dependency(docker: str) -> None:
    # The service's interpreter, and anywhere on disk (a system site-packages, a stray copy).
    packages = [name for name in DEV_MODULES if name != "yaml"] + ["_pytest"]
    probe = (
        "import importlib.util, json, os, shutil; "
        f"print(json.dumps({{'tools': [t for t in {list(COMPILERS)!r} if shutil.which(t)], "
        f"'modules': [m for m in {list(DEV_MODULES)!r} if importlib.util.find_spec(m)], "
        f"'on disk': [os.path.join(r, d) for top in ('/usr', '/opt') for r, ds, _ in os.walk(top) "
        f"for d in ds if d in {packages!r}]}}))"
    )
    result = run(docker, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found == {"tools": [], "modules": [], "on disk": []}, f"the image holds build or dev tools: {found}"
    venv_pip = run(docker, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-m", "pip")
    assert venv_pip.returncode != 0, "pip is uninstalled from the service's virtual environment"
    size = int(run(docker, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"{IMAGE}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES, f"{IMAGE} is {size / 1e6:.0f} MB"


def test_the_image_refuses_a_bad_setting_in_one_line(docker: str) -> None:
    result = run(docker, "run", "--rm", "--network", "none", "-e", "BATCH_SIZE=lots", IMAGE, "config")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "BATCH_SIZE" in result.stderr, result.stderr


def test_pod_flags_follow_the_deployment() -> None:
    flags = pod_flags()
    assert {"--read-only", "--cap-drop=ALL", "no-new-privileges"} <= set(flags)
    assert flags[flags.index("--user") + 1] == "10001:10001"
    assert any(flag.startswith("/tmp:") for flag in flags), "the emptyDir at /tmp"
    assert "KAFKA_SASL_PASSWORD" not in pod_environment("b:9092", Topics("i", "o", "d", "g"), 1)


def test_the_image_logs_in_as_the_configmap_and_secret_say(docker: str, tmp_path: Path, pods: list[Pod]) -> None:
    """SASL_SSL with SCRAM-SHA-512 and the CA file where the Secret volume puts it: the ConfigMap's own
    connection settings, against the secured test broker (scripts/kafka-secure), only the address and
    the Secret's values changed."""
    secure = os.environ.get("SECURE_KAFKA_SASL_SSL")
    if not secure:
        if require_kafka():
            pytest.fail("REQUIRE_KAFKA is set but SECURE_KAFKA_* is not: start scripts/kafka-secure")
        pytest.skip('no secured broker (run: eval "$(scripts/kafka-secure start)")')
    environment = k8s_environment()
    assert environment["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert environment["KAFKA_SSL_CA_LOCATION"] == secret_mount("kafka-ca"), "the CA is read where it is mounted"
    credentials = {"KAFKA_SASL_USERNAME": "pipeline", "KAFKA_SASL_PASSWORD": os.environ["SECURE_KAFKA_PASSWORD"]}
    secret = next(source for source in pipeline_container()["envFrom"] if "secretRef" in source)["secretRef"]
    assert set(credentials) <= set(environment), f"the Secret {secret['name']} sets the SASL user and password"
    # The Secret volume's file, as the kubelet writes it (defaultMode 0444).
    ca = tmp_path / "ca.crt"
    shutil.copyfile(Path(os.environ["SECURE_KAFKA_CERTS"]) / "ca.pem", ca)
    ca.chmod(0o444)

    admin = ConfluentKit(os.environ["SECURE_KAFKA_PLAINTEXT"])  # the broker's administration listener
    topics = Topics.create(admin)
    dataset = Dataset.produce(admin, topics.input, 500, seed=9)
    pod = Pod(docker, secure, topics, secured={"KAFKA_BOOTSTRAP_SERVERS": secure, **credentials}, ca=str(ca))
    pods.append(pod)
    pod.wait_for("ready", lambda: pod.probe("readinessProbe")[0] == 200)
    pod.wait_for("consumed", lambda: metric(pod.metrics(), "pipeline_records_consumed_total") >= 500)
    status, _ = pod.stop()
    assert status == 0, pod.logs()
    outcome = Outcome.read(admin, topics, dataset)
    assert outcome.missing(dataset) == [] and outcome.duplicates() == 0
    assert pod.inspect("{{.Config.User}}") == "10001:10001"
