"""confluent-kafka (librdkafka) adapters: the production default."""

from adapters.confluent.admin import ConfluentAdmin
from adapters.confluent.sink import ConfluentSink
from adapters.confluent.source import ConfluentSource

__all__ = ["ConfluentAdmin", "ConfluentSink", "ConfluentSource"]
