"""The command line as a user meets it: real subprocesses, exit statuses, stdout and stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# 2,000 records shaped like the real generator's output, about one in ten defective (a copy of the team's samples).
SAMPLES = ROOT / "tests" / "data" / "user-login-samples.jsonl"


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
    assert set(summary) == {"consumed", "processed", "dead_lettered", "elapsed_s", "records_per_s"}
    assert summary["consumed"] == 5000 == summary["processed"] + sum(summary["dead_lettered"].values())
    assert 300 < sum(summary["dead_lettered"].values()) < 700  # about one in ten
    assert summary["records_per_s"] > 0


def test_demo_prints_a_readable_summary() -> None:
    result = pipeline("demo", "--count", "2000")
    assert result.returncode == 0, result.stderr
    for label in ("consumed", "processed", "dead-lettered", "records/s", "accounted for"):
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
