"""Broker-neutral records, as the ports exchange them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

Headers = Sequence[tuple[str, bytes]]

# A record timestamp's type, in the Java client's words (TimestampType.toString()).
CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"


class TopicPartition(NamedTuple):
    """Compares and hashes like a plain ``(topic, partition)`` tuple, which hot loops may use instead."""

    topic: str
    partition: int


@dataclass(slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None
    timestamp_type: str | None = None  # CREATE_TIME or LOG_APPEND_TIME, when the client says


@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Why the broker did not take a record.

    ``retriable``: trying again can help. ``collateral``: the record did nothing
    wrong; it was swept away with others (an aborted transaction purges its
    queue), so its failure says nothing about whether it can ever succeed.
    """

    message: str
    retriable: bool = True
    collateral: bool = False

    def __str__(self) -> str:
        return self.message


def header_value(headers: Headers | None, name: str) -> bytes | None:
    """The last value of a header, as Kafka clients conventionally read it."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


def record_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A record's key, value and headers: near what a client counts against its size limits."""
    return len(key or b"") + len(value or b"") + sum(len(name) + len(data or b"") for name, data in headers)
