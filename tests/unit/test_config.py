"""Settings: names old and new, precedence, client properties and clear errors."""

import argparse
import pickle
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from types import UnionType
from typing import get_args, get_origin, get_type_hints

import pytest

from domain.policies import RuleSettings
from domain.versions import AppVersion
from entrypoints.commands import config as config_command
from entrypoints.config import SETTINGS, ConfigError, Secret, Settings, client_property_name, load_settings
from entrypoints.container import build_container


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.broker_client == "confluent"
    assert (settings.input_topic, settings.output_topic, settings.dlq_topic) == (
        "user-login", "processed-user-login", "user-login-dlq",
    )  # fmt: skip
    assert settings.min_app_version == AppVersion.parse("2.0.0")
    assert settings.sources["retry_limit"] == "default"


@pytest.mark.parametrize(
    ("variable", "key", "text", "value"),
    [
        ("KAFKA_BROKER_URL", "bootstrap_servers", "kafka:29092", "kafka:29092"),
        ("KAFKA_INPUT_TOPIC", "input_topic", "in", "in"),
        ("KAFKA_OUTPUT_TOPIC", "output_topic", "out", "out"),
        ("KAFKA_DLQ_TOPIC", "dlq_topic", "dead", "dead"),
        ("KAFKA_CONSUMER_GROUP", "consumer_group", "grp", "grp"),
        ("KAFKA_RETRY_LIMIT", "retry_limit", "7", 7),
        ("LEVEL", "log_level", "DEBUG", "debug"),
        ("SESSION_TIMEOUT", "session_timeout_ms", "10s", 10_000),
        ("SESSION_TIMEOUT", "session_timeout_ms", "6000", 6_000),
        ("AUTO_OFFSET_RESET", "auto_offset_reset", "latest", "latest"),
        ("ENABLE_AUTO_COMMIT", "enable_auto_commit", "true", True),
    ],
)
def test_accepts_the_go_consumers_names(variable: str, key: str, text: str, value: object) -> None:
    settings = load_settings(environ={variable: text})
    assert settings.values[key] == value
    assert settings.sources[key] == variable


def test_new_name_wins_over_old_alias() -> None:
    settings = load_settings(environ={"KAFKA_BROKER_URL": "old:1", "KAFKA_BOOTSTRAP_SERVERS": "new:2"})
    assert settings.bootstrap_servers == "new:2"


def test_precedence_cli_over_environment_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("RETRY_LIMIT=1\nBATCH_SIZE=11\nINPUT_TOPIC=from-file\n")
    settings = load_settings({"RETRY_LIMIT": "3"}, environ={"ENV_FILE": str(env_file), "BATCH_SIZE": "22"})
    assert (settings.retry_limit, settings.batch_size, settings.input_topic) == (3, 22, "from-file")


def test_client_properties_come_from_kafka_variables() -> None:
    settings = load_settings(
        environ={
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_PASSWORD": "hunter2",
            "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
            "KAFKA_HOME": "/opt/kafka",
            "KAFKA_HEAP_OPTS": "-Xmx1g",
            "KAFKA_PORT": "tcp://10.0.0.7:9092",
            "KAFKA_PORT_9092_TCP_ADDR": "10.0.0.7",
            "KAFKA_SERVICE_HOST": "10.0.0.7",
        }
    )
    assert settings.client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "hunter2",
    }
    assert settings.client_properties["sasl.password"] == Secret("hunter2")
    assert client_property_name("KAFKA_SSL_CA_LOCATION") == "ssl.ca.location"
    assert client_property_name("KAFKA_LOCAL_PORT") is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"BROKER_CLIENT": "rabbit"}, "BROKER_CLIENT"),
        ({"RETRY_LIMIT": "-1"}, "RETRY_LIMIT"),
        ({"KAFKA_RETRY_LIMIT": "many"}, "KAFKA_RETRY_LIMIT"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
        ({"SESSION_TIMEOUT": "soon"}, "SESSION_TIMEOUT"),
        ({"MAX_RECORDS_PER_SECOND": "nan"}, "MAX_RECORDS_PER_SECOND"),
        ({"MIN_APP_VERSION": "two"}, "MIN_APP_VERSION"),
        ({"CHECK_IP": "maybe"}, "CHECK_IP"),
        ({"INPUT_TOPIC": "  "}, "INPUT_TOPIC"),
        ({"ENV_FILE": "/nonexistent/.env"}, "ENV_FILE"),
        ({"BROKER_WAIT_TIMEOUT": "0"}, "BROKER_WAIT_TIMEOUT"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)


def test_unknown_cli_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match="NOT_A_SETTING"):
        load_settings({"NOT_A_SETTING": "1"}, environ={})


def test_policy_settings_reach_the_rules() -> None:
    rules = load_settings(
        environ={"MIN_APP_VERSION": "off", "REQUIRE_PUBLIC_IP": "false", "REQUIRED_FIELDS": "user_id, device_type"}
    ).rule_settings()
    assert rules.minimum_app_version is None
    assert rules.require_public_ip is False
    assert rules.required_fields == ("user_id", "device_type")


def test_pipeline_settings_convert_units() -> None:
    pipeline = load_settings(
        environ={"RETRY_BACKOFF_MS": "250", "RETRY_MAX_BACKOFF_MS": "4000", "POLL_TIMEOUT_MS": "100"}
    ).pipeline_settings()
    assert (pipeline.retry.base_backoff_s, pipeline.retry.max_backoff_s, pipeline.poll_timeout_s) == (0.25, 4.0, 0.1)
    assert pipeline.max_records_per_second is None


@pytest.mark.parametrize("text", ["99999", "65536", "-1"])
def test_a_port_out_of_range_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        load_settings(environ={"METRICS_PORT": text})


def test_the_whole_port_range_is_accepted() -> None:
    assert load_settings(environ={"METRICS_PORT": "65535"}).metrics_port == 65535
    assert load_settings(environ={"METRICS_PORT": "0"}).metrics_port == 0


def test_an_env_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    env_file = tmp_path / "latin1.env"
    env_file.write_bytes("RETRY_LIMIT=3\nINPUT_TOPIC=caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"ENV_FILE: {env_file} is not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_settings(environ={}, env_file=env_file)


def test_an_env_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"ENV_FILE: {tmp_path} is a directory"):
        load_settings(environ={}, env_file=tmp_path)


def test_unparsable_env_lines_give_one_warning_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("RETRY_LIMIT=3\nthis is not a setting\n# a comment\nBATCH_SIZE=7\n'broken\n")
    with caplog.at_level("DEBUG"):
        settings = load_settings(environ={}, env_file=env_file)
    assert (settings.retry_limit, settings.batch_size) == (3, 7)
    assert len(settings.warnings) == 1
    assert str(env_file) in settings.warnings[0] and "line(s) 2, 5" in settings.warnings[0]
    assert not [record for record in caplog.records if record.name.startswith("dotenv")], "python-dotenv's own"


def test_unknown_names_in_env_file_give_one_warning_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RETRY_LIMIT=3\nRETRY_LIMT=4\nKAFKA_SASL_MECHANISM=PLAIN\nKAFKA_LOCAL_PORT=1\nMETRIC_PORT=1\n")
    settings = load_settings(environ={}, env_file=env_file)
    assert settings.warnings == (
        f"{env_file}: ignored unknown setting(s) METRIC_PORT, RETRY_LIMT (see `pipeline config --markdown`)",
    )
    assert load_settings(environ={}, env_file=_write(tmp_path / "ok.env", "RETRY_LIMIT=3\n")).warnings == ()


def test_the_example_env_file_gives_no_warning() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"  # copied to .env for the compose stack
    assert load_settings(environ={}, env_file=example).warnings == ()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_origins_say_where_each_value_came_from(tmp_path: Path) -> None:
    env_file = _write(tmp_path / ".env", "RETRY_LIMIT=3\nKAFKA_SASL_MECHANISM=PLAIN\n")
    settings = load_settings(
        {"batch_size": "9", "KAFKA_SASL_PASSWORD": "x"},
        environ={"ENV_FILE": str(env_file), "INPUT_TOPIC": "in"},
        flags={"log_level": "debug"},
    )
    assert settings.origins["retry_limit"] == f"RETRY_LIMIT from .env {env_file}"
    assert settings.origins["input_topic"] == "INPUT_TOPIC from environment"
    assert settings.origins["batch_size"] == "-c batch_size"
    assert settings.origins["log_level"] == "flag --log-level"
    assert settings.origins["output_topic"] == "default"
    assert settings.origins["client:sasl.mechanism"] == f"KAFKA_SASL_MECHANISM from .env {env_file}"
    assert settings.origins["client:sasl.password"] == "-c KAFKA_SASL_PASSWORD"


def test_a_flag_wins_over_dash_c() -> None:
    settings = load_settings({"LOG_LEVEL": "error"}, environ={}, flags={"log_level": "debug"})
    assert settings.log_level == "debug" and settings.sources["log_level"] == "--log-level"


def test_workers_metrics_ports_must_all_exist() -> None:
    with pytest.raises(ConfigError, match="METRICS_PORT: 65535 leaves no port for the last of 2 workers"):
        load_settings(environ={"METRICS_PORT": "65535", "WORKERS": "2"})
    assert load_settings(environ={"METRICS_PORT": "65534", "WORKERS": "2"}).workers == 2
    assert load_settings(environ={"METRICS_PORT": "0", "WORKERS": "8"}).metrics_port == 0


def test_a_secret_never_prints_its_value() -> None:
    settings = load_settings(environ={"KAFKA_SASL_PASSWORD": "hunter2", "KAFKA_SSL_KEY_PASSWORD": "k3y-pass"})
    password = settings.client_properties["sasl.password"]
    assert isinstance(password, Secret) and password.reveal() == "hunter2"
    for shown in (str(password), repr(password), f"{password}", repr(settings), str(settings)):
        assert "hunter2" not in shown and "k3y-pass" not in shown, shown
    assert sorted(settings.secret_values()) == ["hunter2", "k3y-pass"]  # what the log filter scrubs
    assert settings.client_properties["ssl.key.password"] == Secret("k3y-pass")


def test_the_client_gets_the_revealed_credentials_and_nothing_else_does() -> None:
    settings = load_settings(environ={"KAFKA_SASL_PASSWORD": "hunter2", "KAFKA_SASL_USERNAME": "svc"})
    connection = build_container(settings).kafka_connection()
    assert connection.properties == {"sasl.password": "hunter2", "sasl.username": "svc"}
    assert settings.client_properties["sasl.username"] == "svc"  # not a credential: kept as plain text


def test_every_setting_is_a_typed_field_of_the_type_its_parser_returns() -> None:
    hints = get_type_hints(Settings)
    defaults = load_settings(environ={})
    for setting in SETTINGS:
        declared = hints[setting.key]
        parsed = setting.parse(setting.default)
        members = get_args(declared) if get_origin(declared) is UnionType else (declared,)  # AppVersion | None
        accepted = tuple(get_origin(kind) or kind for kind in members)  # tuple[str, ...] -> tuple
        assert isinstance(parsed, accepted), (setting.key, declared, parsed)
        assert getattr(defaults, setting.key) == parsed
    assert list(defaults.values) == [setting.key for setting in SETTINGS]


def test_settings_are_read_only() -> None:
    settings = load_settings(environ={})
    with pytest.raises(FrozenInstanceError):
        settings.batch_size = 1  # type: ignore[misc]
    assert not hasattr(settings, "__dict__")  # no attribute can be added either


def test_settings_reach_a_spawned_worker_whole() -> None:
    settings = load_settings(environ={"KAFKA_SASL_PASSWORD": "hunter2", "RETRY_LIMIT": "3"}).for_worker(2)
    copied = pickle.loads(pickle.dumps(settings))
    assert copied == settings
    assert (copied.worker_index, copied.retry_limit, copied.client_config()) == (2, 3, {"sasl.password": "hunter2"})


def test_every_rule_switch_is_a_setting() -> None:
    # A new RuleSettings field must get a setting of the same name, or be listed here with why.
    not_settings = {
        "minimum_app_version": "MIN_APP_VERSION (min_app_version) sets it",
        "extra_policies": "code only: extra policies are not configurable",
    }
    keys = {setting.key for setting in SETTINGS}
    assert {rule.name for rule in fields(RuleSettings) if rule.name not in keys} == set(not_settings)
    rules = load_settings(environ={"CHECK_IP": "false", "CHECK_TIMESTAMP": "false"}).rule_settings()
    assert (rules.check_ip, rules.check_timestamp, rules.check_field_types) == (False, False, True)


def test_pipeline_config_shows_a_secret_masked_with_its_origin(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"KAFKA_SASL_PASSWORD": "hunter2"}, environ={"KAFKA_SASL_USERNAME": "svc"})
    config_command.run(argparse.Namespace(markdown=False), settings)
    shown = capsys.readouterr().out
    assert "hunter2" not in shown
    password = next(line for line in shown.splitlines() if line.startswith("client: sasl.password"))
    assert password.split()[2] == "***" and password.endswith("(-c KAFKA_SASL_PASSWORD)")
    username = next(line for line in shown.splitlines() if line.startswith("client: sasl.username"))
    assert username.split()[2] == "svc" and username.endswith("(KAFKA_SASL_USERNAME from environment)")
