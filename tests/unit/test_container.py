"""The composition root: every broker client the configuration accepts is wired for every port."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from adapters.confluent import ConfluentAdmin, ConfluentSink, ConfluentSource
from adapters.confluent.transactional import ConfluentTransactionalSink
from adapters.files import JsonLinesSink, JsonLinesSource, OutputFile
from adapters.generator import LoginGenerator
from adapters.kafka_python import KafkaPythonAdmin, KafkaPythonSink, KafkaPythonSource
from adapters.kafka_python.transactional import KafkaPythonTransactionalSink
from adapters.memory import InMemoryAdmin, InMemorySink, InMemorySource, InMemoryTransactionalSink
from application.at_least_once import AtLeastOncePipeline
from application.exactly_once import ExactlyOncePipeline
from entrypoints.config import BROKER_CLIENTS, load_settings
from entrypoints.container import build_container

EXPECTED = {
    "memory": (InMemorySource, InMemorySink, InMemoryAdmin, InMemoryTransactionalSink),
    "confluent": (ConfluentSource, ConfluentSink, ConfluentAdmin, ConfluentTransactionalSink),
    "kafka-python": (KafkaPythonSource, KafkaPythonSink, KafkaPythonAdmin, KafkaPythonTransactionalSink),
}


def test_every_accepted_client_has_an_expectation() -> None:
    assert set(BROKER_CLIENTS) == set(EXPECTED)


@pytest.mark.parametrize("client", BROKER_CLIENTS)
def test_the_configured_client_selects_its_adapters(client: str) -> None:
    container = build_container(load_settings({"BROKER_CLIENT": client}, environ={}))
    chosen = (container.source, container.sink, container.admin, container.transactional_sink)
    # The selected provider's class, without constructing it (a Kafka client would try to connect).
    classes = tuple(getattr(selector.providers[client], "cls", None) for selector in chosen)
    assert classes == EXPECTED[client]


def test_the_in_memory_pipeline_is_built_for_each_guarantee() -> None:
    for guarantee, kind in (("at-least-once", AtLeastOncePipeline), ("exactly-once", ExactlyOncePipeline)):
        settings = load_settings({"BROKER_CLIENT": "memory", "PROCESSING_GUARANTEE": guarantee}, environ={})
        container = build_container(settings)
        assert isinstance(container.pipeline(), kind)


def test_the_offline_and_generator_adapters_come_from_the_container(tmp_path: Path) -> None:
    settings = load_settings({"INPUT_TOPIC": "in", "OUTPUT_TOPIC": "out", "DLQ_TOPIC": "dead"}, environ={})
    container = build_container(settings)
    assert isinstance(container.file_source(tmp_path / "in.jsonl"), JsonLinesSource)
    assert isinstance(container.output_file(tmp_path / "out.jsonl"), OutputFile)
    output, dead_letters = io.BytesIO(), io.BytesIO()
    sink = container.file_sink(output, dead_letters)  # the topics come from the settings
    assert isinstance(sink, JsonLinesSink)
    sink.publish("out", None, b"{}", (), lambda error: None)
    sink.publish("dead", None, b"bad", (), lambda error: None)
    sink.flush(0)
    assert output.getvalue() == b"{}\n"
    assert b"bad" in dead_letters.getvalue()
    first, second = (container.login_generator(seed=7, now=0.0) for _ in range(2))
    assert isinstance(first, LoginGenerator) and list(first.records(5)) == list(second.records(5))


def test_the_json_schema_follows_the_configured_rules() -> None:
    container = build_container(load_settings({"REQUIRED_FIELDS": "user_id"}, environ={}))
    assert json.loads(container.json_schema())["required"] == ["user_id"]
    assert json.loads(container.json_schema(processed=True))["title"] != json.loads(container.json_schema())["title"]
