"""The dependency-injector container: picks adapters from the settings and wires the use cases.

Switching broker clients is a configuration change (``BROKER_CLIENT``); no
domain or application code knows which one runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from dependency_injector import containers, providers

from adapters.confluent import ConfluentAdmin, ConfluentSink, ConfluentSource
from adapters.confluent.groups import ConfluentGroupOffsets
from adapters.confluent.transactional import ConfluentTransactionalSink
from adapters.files import JsonLinesSink, JsonLinesSource, OutputFile
from adapters.generator import LoginGenerator
from adapters.http import OperationsServer
from adapters.json_codec import OrjsonCodec
from adapters.kafka_connection import KafkaConnection, check_tls_files
from adapters.kafka_python import KafkaPythonAdmin, KafkaPythonSink, KafkaPythonSource
from adapters.kafka_python.groups import KafkaPythonGroupOffsets
from adapters.kafka_python.transactional import KafkaPythonTransactionalSink
from adapters.logging import configure_logging
from adapters.memory import InMemoryAdmin, InMemoryBroker, InMemorySink, InMemorySource, InMemoryTransactionalSink
from adapters.memory.groups import InMemoryGroupOffsets
from adapters.metrics import PrometheusMetrics
from adapters.schema import render_json_schema
from adapters.tracing import tracer_from_environment
from application.at_least_once import AtLeastOncePipeline
from application.exactly_once import ExactlyOncePipeline
from application.health import HealthState
from application.loop import PipelineLoop
from application.ports import Clock, GroupOffsets, MessageSink, MessageSource, TopicAdmin, Tracer, TransactionalSink
from application.settings import PipelineSettings
from domain.codec import JsonCodec, StdlibJsonCodec
from domain.policies import ValidationPolicy, build_policies
from domain.processing import LoginEventProcessor
from entrypoints.config import Settings
from entrypoints.instance import claim_slot

# How long a command on its way out waits for its last spans to reach the collector (its records are settled).
TRACING_FLUSH_TIMEOUT_S = 5.0


def transactional_id(settings: Settings) -> str:
    return settings.effective_transactional_id(claim_slot(f"{settings.consumer_group}.{settings.input_topic}"))


def check_tls(connection: KafkaConnection) -> None:
    """Read every role's CA, certificate and key files now: a bad file or key password is exit 2 at start."""
    for role in ("consumer", "producer", "admin"):
        check_tls_files(connection.for_role(role))


class Container(containers.DeclarativeContainer):
    """Every adapter a command uses, picked from the settings; a command asks for what it needs by name."""

    settings: providers.Dependency[Settings] = providers.Dependency(instance_of=Settings)

    clock: providers.Singleton[Clock] = providers.Singleton(Clock)
    health: providers.Singleton[HealthState] = providers.Singleton(HealthState, clock=clock)
    metrics: providers.Singleton[PrometheusMetrics] = providers.Singleton(PrometheusMetrics)
    # Off (the no-op Tracer) unless OTEL_TRACES_EXPORTER asks for spans; the SDK reads the other OTEL_* variables.
    tracer: providers.Singleton[Tracer] = providers.Singleton(
        tracer_from_environment, consumer_group=settings.provided.consumer_group
    )
    operations_server: providers.Singleton[OperationsServer] = providers.Singleton(
        OperationsServer, port=settings.provided.metrics_port, health=health, registry=metrics.provided.registry
    )
    # Logging for this process; a spawned worker passes its index as context.
    logging_setup: providers.Callable[None] = providers.Callable(
        configure_logging,
        level=settings.provided.log_level,
        log_format=settings.provided.log_format,
        secrets=settings.provided.secret_values.call(),
    )

    json_codec: providers.Selector[JsonCodec] = providers.Selector(
        settings.provided.json_codec,
        orjson=providers.Singleton(OrjsonCodec),
        stdlib=providers.Singleton(StdlibJsonCodec),
    )
    policies: providers.Singleton[Sequence[ValidationPolicy]] = providers.Singleton(
        build_policies, settings.provided.rule_settings.call()
    )
    processor: providers.Singleton[LoginEventProcessor] = providers.Singleton(
        LoginEventProcessor, policies=policies, codec=json_codec
    )
    json_schema: providers.Callable[str] = providers.Callable(
        render_json_schema, rules=settings.provided.rule_settings.call()
    )
    # Generated user-login records (demo, produce): seed and invalid ratio come from the command.
    login_generator: providers.Factory[LoginGenerator] = providers.Factory(LoginGenerator)

    # The largest record the producers must let through: set at start from the input topic's max.message.bytes.
    message_limit: providers.Object[int | None] = providers.Object(None)

    memory_broker: providers.Singleton[InMemoryBroker] = providers.Singleton(
        InMemoryBroker, default_partitions=settings.provided.topic_partitions, clock=clock
    )
    kafka_connection: providers.Singleton[KafkaConnection] = providers.Singleton(
        KafkaConnection,
        bootstrap_servers=settings.provided.bootstrap_servers,
        properties=settings.provided.client_config.call(),
    )
    tls_check: providers.Callable[None] = providers.Callable(check_tls, kafka_connection)

    source: providers.Selector[MessageSource] = providers.Selector(
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
    sink: providers.Selector[MessageSink] = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemorySink, broker=memory_broker),
        confluent=providers.Factory(ConfluentSink, connection=kafka_connection, max_message_bytes=message_limit),
        **{
            "kafka-python": providers.Factory(
                KafkaPythonSink, connection=kafka_connection, max_message_bytes=message_limit
            )
        },
    )
    admin: providers.Selector[TopicAdmin] = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemoryAdmin, broker=memory_broker),
        confluent=providers.Factory(ConfluentAdmin, connection=kafka_connection),
        **{"kafka-python": providers.Factory(KafkaPythonAdmin, connection=kafka_connection)},
    )
    group_offsets: providers.Selector[GroupOffsets] = providers.Selector(
        settings.provided.broker_client,
        memory=providers.Factory(InMemoryGroupOffsets, broker=memory_broker),
        confluent=providers.Factory(ConfluentGroupOffsets, connection=kafka_connection),
        **{"kafka-python": providers.Factory(KafkaPythonGroupOffsets, connection=kafka_connection)},
    )

    transactional_sink: providers.Selector[TransactionalSink] = providers.Selector(
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

    # `pipeline process`: JSON-lines files instead of topics (paths and the failure callback come from the command).
    output_file: providers.Factory[OutputFile] = providers.Factory(OutputFile)
    file_source: providers.Factory[JsonLinesSource] = providers.Factory(
        JsonLinesSource, topic=settings.provided.input_topic
    )
    file_sink: providers.Factory[JsonLinesSink] = providers.Factory(
        JsonLinesSink, output_topic=settings.provided.output_topic, dlq_topic=settings.provided.dlq_topic
    )

    pipeline_settings: providers.Singleton[PipelineSettings] = providers.Singleton(
        settings.provided.pipeline_settings.call()
    )
    # What both use cases take besides their source and sink.
    _use_case: ClassVar[dict[str, providers.Provider[Any]]] = {
        "processor": processor,
        "settings": pipeline_settings,
        "clock": clock,
        "metrics": metrics,
        "health": health,
        "tracer": tracer,
    }
    guarantees: ClassVar[dict[str, providers.Provider[Any]]] = {
        "at-least-once": providers.Factory(AtLeastOncePipeline, source=source, sink=sink, **_use_case),
        "exactly-once": providers.Factory(ExactlyOncePipeline, source=source, sink=transactional_sink, **_use_case),
    }
    pipeline: providers.Selector[PipelineLoop[Any]] = providers.Selector(
        settings.provided.processing_guarantee, **guarantees
    )


def build_container(settings: Settings) -> Container:
    return Container(settings=settings)
