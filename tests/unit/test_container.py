"""The composition root: every broker client the configuration accepts is wired for every port."""

from __future__ import annotations

import pytest

from adapters.confluent import ConfluentAdmin, ConfluentSink, ConfluentSource
from adapters.confluent.transactional import ConfluentTransactionalSink
from adapters.kafka_python import KafkaPythonAdmin, KafkaPythonSink, KafkaPythonSource
from adapters.kafka_python.transactional import KafkaPythonTransactionalSink
from adapters.memory import InMemoryAdmin, InMemorySink, InMemorySource, InMemoryTransactionalSink
from application.pipeline import Pipeline
from application.transactional import TransactionalPipeline
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
    for guarantee, kind in (("at-least-once", Pipeline), ("exactly-once", TransactionalPipeline)):
        settings = load_settings({"BROKER_CLIENT": "memory", "PROCESSING_GUARANTEE": guarantee}, environ={})
        container = build_container(settings)
        assert isinstance(container.pipeline(), kind)
