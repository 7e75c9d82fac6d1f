"""The dependency-injector container: picks adapters from the settings and wires the use cases.

Switching broker clients is a configuration change (``BROKER_CLIENT``); no
domain or application code knows which one runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dependency_injector import containers, providers

from adapters.confluent import ConfluentAdmin, ConfluentSink, ConfluentSource
from adapters.confluent.groups import ConfluentGroupOffsets
from adapters.confluent.transactional import ConfluentTransactionalSink
from adapters.http import OperationsServer
from adapters.json_codec import OrjsonCodec
from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python import KafkaPythonAdmin, KafkaPythonSink, KafkaPythonSource
from adapters.kafka_python.groups import KafkaPythonGroupOffsets
from adapters.kafka_python.transactional import KafkaPythonTransactionalSink
from adapters.memory import InMemoryAdmin, InMemoryBroker, InMemorySink, InMemorySource, InMemoryTransactionalSink
from adapters.memory.groups import InMemoryGroupOffsets
from adapters.metrics import PrometheusMetrics
from adapters.tracing import tracer_from_environment
from application.health import HealthState
from application.pipeline import Pipeline
from application.ports import Clock
from application.transactional import TransactionalPipeline
from domain.codec import StdlibJsonCodec
from domain.policies import build_policies
from domain.processing import LoginEventProcessor
from entrypoints.config import Settings
from entrypoints.instance import claim_slot

# How long a command on its way out waits for its last spans to reach the collector (its records are settled).
TRACING_FLUSH_TIMEOUT_S = 5.0


def transactional_id(settings: Settings) -> str:
    return settings.effective_transactional_id(claim_slot(f"{settings.consumer_group}.{settings.input_topic}"))


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(Clock)
    health = providers.Singleton(HealthState, clock=clock)
    metrics = providers.Singleton(PrometheusMetrics)
    # Off (the no-op Tracer) unless OTEL_TRACES_EXPORTER asks for spans; the SDK reads the other OTEL_* variables.
    tracer = providers.Singleton(tracer_from_environment, consumer_group=settings.provided.consumer_group)
    operations_server = providers.Singleton(
        OperationsServer, port=settings.provided.metrics_port, health=health, registry=metrics.provided.registry
    )

    json_codec = providers.Selector(
        settings.provided.json_codec,
        orjson=providers.Singleton(OrjsonCodec),
        stdlib=providers.Singleton(StdlibJsonCodec),
    )
    policies = providers.Singleton(build_policies, settings.provided.rule_settings.call())
    processor = providers.Singleton(LoginEventProcessor, policies=policies, codec=json_codec)

    # The largest record the producers must let through: set at start from the input topic's max.message.bytes.
    message_limit: providers.Object[int | None] = providers.Object(None)

    memory_broker = providers.Singleton(
        InMemoryBroker, default_partitions=settings.provided.topic_partitions, clock=clock
    )
    kafka_connection = providers.Singleton(
        KafkaConnection,
        bootstrap_servers=settings.provided.bootstrap_servers,
        properties=settings.provided.client_properties,
    )

    source = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(
            InMemorySource,
            broker=memory_broker,
            group_id=settings.provided.consumer_group,
            auto_offset_reset=settings.provided.auto_offset_reset,
        ),
        confluent=providers.Factory(
            ConfluentSource,
            connection=kafka_connection,
            group_id=settings.provided.consumer_group,
            auto_offset_reset=settings.provided.auto_offset_reset,
            session_timeout_ms=settings.provided.session_timeout_ms,
        ),
        **{
            "kafka-python": providers.Factory(
                KafkaPythonSource,
                connection=kafka_connection,
                group_id=settings.provided.consumer_group,
                auto_offset_reset=settings.provided.auto_offset_reset,
                session_timeout_ms=settings.provided.session_timeout_ms,
            ),
        },
    )
    sink = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemorySink, broker=memory_broker),
        confluent=providers.Factory(ConfluentSink, connection=kafka_connection, max_message_bytes=message_limit),
        **{
            "kafka-python": providers.Factory(
                KafkaPythonSink, connection=kafka_connection, max_message_bytes=message_limit
            )
        },
    )
    admin = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemoryAdmin, broker=memory_broker),
        confluent=providers.Factory(ConfluentAdmin, connection=kafka_connection),
        **{"kafka-python": providers.Factory(KafkaPythonAdmin, connection=kafka_connection)},
    )
    group_offsets = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemoryGroupOffsets, broker=memory_broker),
        confluent=providers.Factory(ConfluentGroupOffsets, connection=kafka_connection),
        **{"kafka-python": providers.Factory(KafkaPythonGroupOffsets, connection=kafka_connection)},
    )

    transactional_sink = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemoryTransactionalSink, broker=memory_broker),
        confluent=providers.Factory(
            ConfluentTransactionalSink,
            connection=kafka_connection,
            transactional_id=providers.Callable(transactional_id, settings),
            transaction_timeout_ms=settings.provided.transaction_timeout_ms,
            max_message_bytes=message_limit,
        ),
        **{
            "kafka-python": providers.Factory(
                KafkaPythonTransactionalSink,
                connection=kafka_connection,
                transactional_id=providers.Callable(transactional_id, settings),
                transaction_timeout_ms=settings.provided.transaction_timeout_ms,
                max_message_bytes=message_limit,
            ),
        },
    )

    pipeline_settings = providers.Singleton(settings.provided.pipeline_settings.call())
    guarantees: ClassVar[dict[str, providers.Provider[Any]]] = {
        "at-least-once": providers.Factory(
            Pipeline,
            source=source,
            sink=sink,
            processor=processor,
            settings=pipeline_settings,
            clock=clock,
            metrics=metrics,
            health=health,
            tracer=tracer,
        ),
        "exactly-once": providers.Factory(
            TransactionalPipeline,
            source=source,
            sink=transactional_sink,
            processor=processor,
            settings=pipeline_settings,
            clock=clock,
            metrics=metrics,
            health=health,
            tracer=tracer,
        ),
    }
    pipeline = providers.Selector(settings.provided.processing_guarantee, **guarantees)


def build_container(settings: Settings) -> Container:
    container = Container(settings=settings)
    return container
