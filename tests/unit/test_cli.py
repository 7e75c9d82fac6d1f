"""The command line as a user meets it: real subprocesses, exit statuses, stdout and stderr."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# 2,000 records shaped like the real generator's output, about one in ten defective (a copy of the team's samples).
SAMPLES = ROOT / "tests" / "data" / "user-login-samples.jsonl"
README = (ROOT / "README.md").read_text()


def pipeline(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BROKER_", "LOG_"))}
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        capture_output=True, text=True, check=False, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd or ROOT, timeout=120,
    )  # fmt: skip


def test_demo_json_accounts_for_every_record() -> None:
    result = pipeline("demo", "--count", "5000", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert set(summary) == {
        "consumed", "processed", "dead_lettered", "generation_s", "processing_s", "elapsed_s", "records_per_s",
    }  # fmt: skip
    assert summary["consumed"] == 5000 == summary["processed"] + sum(summary["dead_lettered"].values())
    assert 300 < sum(summary["dead_lettered"].values()) < 700  # about one in ten
    assert summary["generation_s"] > 0 and summary["processing_s"] > 0  # generating is not counted as processing
    assert summary["generation_s"] + summary["processing_s"] == pytest.approx(summary["elapsed_s"], abs=0.002)
    # processing_s is rounded to the millisecond, the rate is not: on a fast machine (~40 ms) that is 1%.
    processing = summary["processing_s"]
    assert 5000 / (processing + 0.0005) - 0.1 <= summary["records_per_s"] <= 5000 / (processing - 0.0005) + 0.1


def test_demo_prints_a_readable_summary() -> None:
    result = pipeline("demo", "--count", "2000")
    assert result.returncode == 0, result.stderr
    for label in ("consumed", "processed", "dead-lettered", "generation", "processing", "records/s", "accounted for"):
        assert label in result.stdout
    assert "accounted for" in result.stdout and " yes " in result.stdout


def test_process_writes_outputs_in_order_and_explains_rejections(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    good = {"user_id": "u1", "app_version": "2.3.0", "device_type": "iOS", "locale": "FR", "timestamp": "17"}
    lines = [json.dumps(good), "{truncated", "", json.dumps({**good, "user_id": "u2", "ip": "10.0.0.1"}),
             json.dumps({**good, "user_id": "u3"})]  # fmt: skip
    source.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    result = pipeline("process", str(source), "--out", str(out), "--dlq", str(dlq))
    assert result.returncode == 0, result.stderr
    processed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["user_id"] for p in processed] == ["u1", "u3"]
    assert processed[0]["locale"] == "fr" and processed[0]["timestamp"] == 17
    rejected = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (2, "malformed_json"), (3, "malformed_json"), (4, "non_public_ip"), (6, "malformed_json"),
    ]  # fmt: skip
    assert rejected[0]["raw"] == "{truncated" and rejected[0]["error"]
    assert rejected[3]["raw_base64"] == "//4="
    assert "6 lines: 2 processed" in result.stderr


def test_process_the_generator_shaped_samples(tmp_path: Path) -> None:
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    result = pipeline("process", str(SAMPLES), "--out", str(out), "--dlq", str(dlq))
    assert result.returncode == 0, result.stderr
    processed, rejected = out.read_text().splitlines(), dlq.read_text().splitlines()
    assert len(processed) + len(rejected) == 2000
    assert 100 <= len(rejected) <= 400, "about one in ten samples is defective"
    assert all(json.loads(line)["reason"] for line in rejected)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["demo"], {"BROKER_CLIENT": "rabbitmq"}, "BROKER_CLIENT"),
        (["demo"], {"RETRY_LIMIT": "-3"}, "RETRY_LIMIT"),
        (["demo"], {"KAFKA_RETRY_LIMIT": "lots"}, "KAFKA_RETRY_LIMIT"),
        (["demo", "-c", "BATCH_SIZE=0"], {}, "BATCH_SIZE"),
        (["process", "/nonexistent.jsonl", "--out", "/tmp/o", "--dlq", "/tmp/d"], {}, "does not exist"),
        (["process", "pyproject.toml", "--out", "/nonexistent-dir/o", "--dlq", "/tmp/d"], {}, "cannot write"),
        (["demo", "--count", "0"], {}, "--count"),
        (["demo", "--count", "many"], {}, "--count"),
    ],
)
def test_user_mistakes_exit_2_with_one_clear_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = pipeline(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAFKA_RETRY_LIMIT=9\nKAFKA_SASL_PASSWORD=s3cret-value\n")
    result = pipeline("config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("RETRY_LIMIT "))
    assert line.split()[1] == "9" and line.endswith(f"(KAFKA_RETRY_LIMIT from .env {tmp_path / '.env'})")
    assert "s3cret-value" not in result.stdout


def test_schema_command_prints_json_schema() -> None:
    result = pipeline("schema")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["required"] == ["user_id", "app_version", "device_type"]
    assert "timestamp" in document["properties"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> str:
    """The failure is one ``pipeline:`` line on stderr with ``fragments`` in it, and no traceback."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [["config"], ["demo", "--count", "10"], ["run"]])
def test_a_port_out_of_range_is_a_configuration_error(command: list[str]) -> None:
    result = pipeline(*command, env={"METRICS_PORT": "99999", "BROKER_CLIENT": "memory"})
    line = assert_one_line(result, 2, "METRICS_PORT", "99999")
    assert f"`{line}`" in README, "the troubleshooting table shows the exact line"


def test_a_metrics_port_in_use_is_one_line_naming_port_and_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pipeline("run", "--max-messages", "1", env={"BROKER_CLIENT": "memory", "METRICS_PORT": str(port)})
    assert_one_line(result, 1, f"port {port}", "METRICS_PORT", "in use")


@pytest.mark.parametrize("command", [["config"], ["demo", "--count", "10"], ["schema"]])
def test_an_env_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / ".env").write_bytes(b"INPUT_TOPIC=caf\xe9\n")
    result = pipeline(*command, cwd=tmp_path)
    assert_one_line(result, 2, str(tmp_path / ".env"), "not UTF-8")


def test_env_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    result = pipeline("config", "--env-file", str(tmp_path))
    assert_one_line(result, 2, str(tmp_path), "is a directory")


def test_garbage_and_unknown_names_in_env_file_warn_once_each_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RETRY_LIMIT=4\nnot a setting at all\nRETRY_LIMT=5\n")
    result = pipeline("config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr
    assert str(env_file) in warnings[0] and "line(s) 2" in warnings[0]
    assert str(env_file) in warnings[1] and "RETRY_LIMT" in warnings[1]
    assert "python-dotenv" not in result.stderr


def test_config_prints_values_as_the_settings_table_writes_them(tmp_path: Path) -> None:
    result = pipeline("config", "--log-level", "debug", "-c", "BATCH_SIZE=9", env={"RETRY_LIMIT": "2"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert shown["ENABLE_AUTO_COMMIT"].split()[1:] == ["false", "(default)"]
    assert shown["CHECK_IP"].split()[1] == "true"
    assert shown["SHUTDOWN_TIMEOUT"].split()[1] == "30" and shown["MAX_RECORDS_PER_SECOND"].split()[1] == "0"
    assert shown["LOG_LEVEL"].endswith("(flag --log-level)")
    assert shown["BATCH_SIZE"].endswith("(-c BATCH_SIZE)")
    assert shown["RETRY_LIMIT"].endswith("(RETRY_LIMIT from environment)")


def test_version() -> None:
    result = pipeline("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pipeline ") and len(result.stdout.split()) >= 2


def test_demo_help_documents_count_and_seed_with_their_defaults() -> None:
    result = pipeline("demo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--count N records to generate (default 100000)" in text
    assert "--seed S" in text and "(default 42)" in text


@pytest.mark.parametrize("command", [["config"], ["config", "--markdown"], ["schema"], ["schema", "--processed"]])
def test_a_closed_output_pipe_ends_quietly(command: list[str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BROKER_", "LOG_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**clean, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head -0`: the reader is gone before the first line
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) in (0, 141)
    assert errors == ""


def test_process_to_a_full_disk_is_one_line(tmp_path: Path) -> None:
    result = pipeline("process", str(SAMPLES), "--out", "/dev/full", "--dlq", str(tmp_path / "d.jsonl"))
    line = assert_one_line(result, 1, "cannot write /dev/full: No space left on device")
    assert f"`{line}`" in README, "the troubleshooting table shows the exact line"
    assert not (tmp_path / "d.jsonl").exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"


def test_process_with_a_bad_dlq_path_leaves_existing_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("yesterday's results\n")
    result = pipeline("process", str(SAMPLES), "--out", str(out), "--dlq", "/no/such/dir/d.jsonl")
    line = assert_one_line(result, 2, "cannot write /no/such/dir/d.jsonl")
    assert f"`{line}`" in README, "the troubleshooting table shows the exact line"
    assert out.read_text() == "yesterday's results\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.jsonl"]


def test_process_replaces_existing_outputs_keeping_their_permissions(tmp_path: Path) -> None:
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    result = pipeline("process", str(SAMPLES), "--out", str(out), "--dlq", str(dlq))
    assert result.returncode == 0, result.stderr
    assert "old" not in out.read_text() and len(out.read_text().splitlines()) > 1000
    assert out.stat().st_mode & 0o777 == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dlq.jsonl", "out.jsonl"]


def test_process_to_dev_null_writes_through() -> None:
    result = pipeline("process", str(SAMPLES), "--out", "/dev/null", "--dlq", "/dev/null")
    assert_one_line(result, 2, "three different files")  # the same file twice is still refused
    result = pipeline("process", str(SAMPLES), "--out", "/dev/null", "--dlq", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    assert all(json.loads(line)["reason"] for line in result.stdout.splitlines())


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_produce_to_a_dead_broker_fails_within_the_bound(client: str) -> None:
    env = {"BROKER_CLIENT": client, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "BROKER_WAIT_TIMEOUT": "3"}
    started = time.monotonic()
    result = pipeline("produce", "--count", "50", env=env)
    elapsed = time.monotonic() - started
    line = assert_one_line(result, 1, "not acknowledged", "BROKER_WAIT_TIMEOUT", "KAFKA_BOOTSTRAP_SERVERS")
    assert "records" in line or "record(s)" in line
    assert elapsed < 3 + 20, f"took {elapsed:.0f}s"
    for word in ("committing", "leaving the group", "offsets"):
        assert word not in result.stderr


def test_produce_to_the_memory_broker_says_the_records_vanish() -> None:
    result = pipeline("produce", "--count", "20", env={"BROKER_CLIENT": "memory"})
    assert result.returncode == 0, result.stderr
    assert "vanish when it exits" in result.stderr
    assert "20 acknowledged, 0 failed" in result.stderr


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
@pytest.mark.parametrize("command", [["dlq", "inspect"], ["dlq", "replay"]])
def test_dlq_commands_with_the_broker_unreachable_are_one_line(client: str, command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = pipeline(*command, env={"BROKER_CLIENT": client, "KAFKA_BOOTSTRAP_SERVERS": address})
    assert_one_line(result, 1, f"cannot reach Kafka at {address}", "KAFKA_BOOTSTRAP_SERVERS")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("extra", ["a.b=1\n  c.d = 2\n", "a.b=1\nc.d = 2\n   \n\n", "a.b=1, c.d = 2\n"])
def test_kafka_local_extra_properties_may_end_with_a_newline(tmp_path: Path, extra: str) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "kafka-local"), "properties"], capture_output=True, text=True, check=False,
        env={**os.environ, "KAFKA_LOCAL_DIR": str(tmp_path), "KAFKA_LOCAL_EXTRA_PROPERTIES": extra}, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == ["# KAFKA_LOCAL_EXTRA_PROPERTIES", "a.b=1", "c.d = 2"]


def test_produce_stopped_by_sigint_speaks_of_records_and_exits_0() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BROKER_", "LOG_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "produce", "--forever", "--rate", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), "BROKER_CLIENT": "memory"},
    )  # fmt: skip
    assert process.stderr is not None
    first = process.stderr.readline()  # logged once the signal handler is in place
    assert "vanish when it exits" in first
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 0, rest
    assert "SIGINT received: sending no more records; waiting for the ones sent to be acknowledged" in rest
    assert " 0 failed" in rest and "Traceback" not in rest
    for word in ("committing", "leaving the group", "offsets"):
        assert word not in rest
