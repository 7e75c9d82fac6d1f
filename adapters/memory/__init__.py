"""An embedded broker for unit tests and the demo: no network, no threads of its own."""

from adapters.memory.admin import InMemoryAdmin
from adapters.memory.broker import InMemoryBroker, StoredRecord
from adapters.memory.sink import InMemorySink
from adapters.memory.source import InMemorySource
from adapters.memory.transactional import InMemoryTransactionalSink

__all__ = [
    "InMemoryAdmin",
    "InMemoryBroker",
    "InMemorySink",
    "InMemorySource",
    "InMemoryTransactionalSink",
    "StoredRecord",
]
