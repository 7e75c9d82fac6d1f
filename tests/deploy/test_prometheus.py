"""Prometheus for real: Debian's prometheus and promtool (apt-get install prometheus) run the project's files.

- promtool checks alerts.yml and runs its unit tests (alerts.test.yml), which must cover every alert
  both firing and silent;
- a Prometheus started with deploy/prometheus/prometheus.yml (only its targets changed, to a running
  service on loopback) scrapes `pipeline run` while records flow through the real broker, and its HTTP
  API must return every metric the README documents with the values that run implies; the alert rules
  load and none fires;
- every metric the alerts and the Grafana dashboard query is one the running service serves.

Without the binaries these tests skip, unless REQUIRE_PROMETHEUS=1 (set by .ci/run): then they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.contract.kits import ConfluentKit
from tests.deploy.test_deploy_files import (
    DASHBOARDS,
    PROMETHEUS_BUILTIN_SERIES,
    PROMETHEUS_DIR,
    ROOT,
    dashboard_queries,
    prometheus_rule_expressions,
    promql_metric_names,
    required,
)
from tests.integration.harness import Dataset, Service, Topics, free_port

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
RECORDS = 3000
# `| `name{labels}` | kind | meaning |` rows of the README's metrics table.
README_METRIC = re.compile(r"^\| `(pipeline_[a-z_]+)(?:\{[^}]*\})?` \| (counter|gauge|histogram) \|", re.M)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install prometheus)"
        if required("REQUIRE_PROMETHEUS"):
            pytest.fail(f"REQUIRE_PROMETHEUS=1: {reason}")
        pytest.skip(reason)
    return path


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *arguments], capture_output=True, text=True, timeout=120, check=False, cwd=PROMETHEUS_DIR
    )


def alert_names() -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def readme_metrics() -> dict[str, str]:
    found = dict(README_METRIC.findall((ROOT / "README.md").read_text()))
    assert len(found) >= 10, "the README's metrics table was not found"
    return found


# ----------------------------------------------------------------------------- promtool


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_silent() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    assert [Path(path).name for path in suite["rule_files"]] == [ALERTS.name]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fires == set(alert_names()), f"no firing case for {set(alert_names()) - fires}"
    assert silent == set(alert_names()), f"no silent case for {set(alert_names()) - silent}"


# ----------------------------------------------------------------------------- a real Prometheus


@dataclass
class Scrape:
    service: Service
    dataset: Dataset
    topics: Topics
    api: str
    metrics_text: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.api}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.api}{path}", timeout=10) as response:
            return json.loads(response.read())["data"]


def scrape_config(metrics_port: int, directory: Path) -> Path:
    """deploy/prometheus/prometheus.yml with its targets (Docker DNS) replaced by the service on loopback."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "pipeline"]
    assert len(jobs) == 1
    for key in [key for key in jobs[0] if key.endswith("_sd_configs") or key == "static_configs"]:
        del jobs[0][key]
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["rule_files"] = [str(PROMETHEUS_DIR / Path(path).name) for path in config.get("rule_files") or []]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_until(what: str, condition: Any, timeout_s: float, why: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (OSError, AssertionError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s:g}s\n{why()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scrape(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    prometheus = binary("prometheus")
    kit = ConfluentKit(kafka_bootstrap)
    topics = Topics.create(kit)
    dataset = Dataset.produce(kit, topics.input, RECORDS, seed=41)
    service = Service(kafka_bootstrap, "confluent", topics)
    directory = tmp_path_factory.mktemp("prometheus")
    config = scrape_config(service.port, directory)
    check = promtool("check", "config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = (directory / "prometheus.log").open("w")
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    try:
        service.wait_consumed(RECORDS)
        # The service's own final state: everything acknowledged, the lag (reported every 5 s) down to 0.
        metrics_url = f"http://127.0.0.1:{service.port}/metrics"

        def settled() -> bool:
            with urllib.request.urlopen(metrics_url, timeout=3) as response:
                text = response.read().decode()
            lags = re.findall(r"^pipeline_consumer_lag\{[^}]*\} (\S+)$", text, re.M)
            in_flight = re.search(r"^pipeline_records_in_flight (\S+)$", text, re.M)
            return (
                len(lags) == 4
                and all(float(v) == 0 for v in lags)
                and in_flight is not None
                and float(in_flight.group(1)) == 0
            )

        wait_until("settled", settled, 60, service.output)
        with urllib.request.urlopen(metrics_url, timeout=3) as response:
            text = response.read().decode()
        scrape = Scrape(service, dataset, topics, api, text)
        # Prometheus has scraped that final state (scrape_interval 5s).
        processed = len(dataset.valid_by_user)

        def scraped() -> bool:
            return (
                scrape.value('pipeline_records_processed_total{job="pipeline"}') == processed
                and scrape.value('sum(pipeline_consumer_lag{job="pipeline"})') == 0
                and scrape.value('pipeline_records_in_flight{job="pipeline"}') == 0
            )

        wait_until("scraped", scraped, 60, lambda: (directory / "prometheus.log").read_text()[-3000:])
        yield scrape
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        if service.process.poll() is None:
            service.kill()


@pytest.mark.integration
def test_prometheus_reads_every_documented_metric_with_the_values_of_the_run(scrape: Scrape) -> None:
    documented = readme_metrics()
    job = '{job="pipeline"}'
    for name, kind in documented.items():
        series = f"{name}_count" if kind == "histogram" else name
        assert scrape.query(f"{series}{job}"), f"{series}: documented in the README, not in Prometheus"
    expected = Counter(reason for reason in scrape.dataset.values.values() if reason)
    assert scrape.value(f"up{job}") == 1
    assert scrape.value(f"pipeline_records_consumed_total{job}") == RECORDS
    assert scrape.value(f"pipeline_records_processed_total{job}") == len(scrape.dataset.valid_by_user)
    by_reason = {
        item["metric"]["reason"]: float(item["value"][1])
        for item in scrape.query(f"pipeline_records_dead_lettered_total{job}")
    }
    assert by_reason == {reason: float(count) for reason, count in expected.items()}
    assert scrape.value(f"pipeline_publish_retries_total{job}") == 0
    assert scrape.value(f"pipeline_offset_commits_total{job}") >= 4  # each of the 4 partitions at least once
    for histogram in ("pipeline_batch_duration_seconds", "pipeline_record_processing_seconds"):
        assert scrape.value(f"{histogram}_count{job}") >= 1
        assert scrape.value(f'{histogram}_bucket{{job="pipeline",le="+Inf"}}') == scrape.value(
            f"{histogram}_count{job}"
        )
    assert scrape.value(f"pipeline_end_to_end_latency_seconds_count{job}") >= 1
    lags = scrape.query(f"pipeline_consumer_lag{job}")
    assert {(item["metric"]["topic"], item["metric"]["partition"]) for item in lags} == {
        (scrape.topics.input, str(partition)) for partition in range(4)
    }
    assert all(float(item["value"][1]) == 0 for item in lags)
    for gauge in ("pipeline_records_in_flight", "pipeline_paused_partitions", "pipeline_stalled_partitions"):
        assert scrape.value(f"{gauge}{job}") == 0, gauge

    # The alert rules are loaded and evaluated, and a healthy run fires none of them.
    # Evaluated every 15 s: a rule not evaluated yet has health "unknown", so wait for that first.
    wait_until("rules evaluated", lambda: all(
        rule["lastEvaluation"] > "2000" for group in scrape.get("/api/v1/rules")["groups"] for rule in group["rules"]
    ), 30)  # fmt: skip
    groups = scrape.get("/api/v1/rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == set(alert_names())
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    assert scrape.get("/api/v1/alerts")["alerts"] == []


def served_series(metrics_text: str) -> set[str]:
    return {
        match.group(1) for match in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? \S+$", metrics_text, re.M)
    }


@pytest.mark.integration
def test_alerts_and_dashboards_query_only_series_the_running_service_serves(scrape: Scrape) -> None:
    served = served_series(scrape.metrics_text) | PROMETHEUS_BUILTIN_SERIES
    queries = prometheus_rule_expressions()
    for path in DASHBOARDS:
        queries += dashboard_queries(json.loads(path.read_text()))
    used = {name for query in queries for name in promql_metric_names(query)}
    assert used, "no metric name found in the alerts and dashboards"
    assert used <= served, f"queried but not served by `pipeline run`: {sorted(used - served)}"
    # The documented ones too, as they appear in /metrics.
    for name, kind in readme_metrics().items():
        assert (f"{name}_count" if kind == "histogram" else name) in served, name


def test_the_series_parser_reads_the_exposition_format() -> None:
    text = '# HELP x_total X\n# TYPE x_total counter\nx_total 3.0\ny_bucket{le="+Inf"} 2.0\nz{a="b",c="d"} 1e-05\n'
    assert served_series(text) == {"x_total", "y_bucket", "z"}


def test_the_scrape_config_changes_only_the_targets(tmp_path: Path) -> None:
    original = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    adapted = yaml.safe_load(scrape_config(9999, tmp_path).read_text())
    assert adapted["global"] == original["global"]
    [job] = adapted["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert {key: value for key, value in job.items() if key != "static_configs"} == {
        key: value for key, value in original["scrape_configs"][0].items() if not key.endswith("_sd_configs")
    }
    assert [Path(path).name for path in adapted["rule_files"]] == [Path(p).name for p in original["rule_files"]]
