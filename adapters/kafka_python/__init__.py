"""kafka-python adapters: the pure-Python alternative to confluent-kafka (BROKER_CLIENT=kafka-python)."""

from adapters.kafka_python.admin import KafkaPythonAdmin
from adapters.kafka_python.sink import KafkaPythonSink
from adapters.kafka_python.source import KafkaPythonSource

__all__ = ["KafkaPythonAdmin", "KafkaPythonSink", "KafkaPythonSource"]
