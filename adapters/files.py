"""JSON-lines files as a message source and sink, so ``pipeline process`` runs the same pipeline offline.

The source is one partition whose offsets are 0-based line indexes; the sink
writes processed values to one file and turns dead letters into JSON objects
(``line``, ``reason``, ``error``, ``raw``) in another.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from application import dead_letter
from application.messages import ConsumedRecord, Headers, TopicPartition, header_value
from application.ports import DeliveryCallback, MessageSink, MessageSource, RebalanceListener


class JsonLinesSource(MessageSource):
    def __init__(self, path: Path, topic: str = "file") -> None:
        self._path = path
        self._topic = topic
        self._file: BinaryIO | None = None
        self._listener: RebalanceListener | None = None
        self._line = 0
        self.lines_read = 0

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._topic = topics[0] if topics else self._topic
        self._listener = listener
        self._file = self._path.open("rb")
        listener.on_assigned([TopicPartition(self._topic, 0)])

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        if self._file is None:
            return []
        records = []
        for _ in range(max_records):
            line = self._file.readline()
            if not line:
                break
            records.append(ConsumedRecord(self._topic, 0, self._line, None, line.rstrip(b"\r\n")))
            self._line += 1
        self.lines_read = self._line
        return records

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Nothing to store: a file is re-read from the start by design."""

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Never needed: the file sink acknowledges on every poll."""

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """See ``pause``."""

    def close(self) -> None:
        if self._file is not None:
            if self._listener is not None:
                self._listener.on_revoked([TopicPartition(self._topic, 0)])
            self._file.close()
            self._file = None


def dead_letter_line(value: bytes | None, headers: Headers) -> bytes:
    """One DLQ file line: where the record was, why it failed, and its original text."""
    raw = value or b""
    offset = header_value(headers, dead_letter.SOURCE_OFFSET)
    entry: dict[str, object] = {
        "line": int(offset) + 1 if offset is not None else None,
        "reason": (header_value(headers, dead_letter.REASON) or b"").decode(),
        "error": (header_value(headers, dead_letter.ERROR) or b"").decode("utf-8", "replace"),
        "raw": raw.decode("utf-8", "replace"),
    }
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(raw).decode()  # the exact bytes, which "raw" cannot hold
    return orjson.dumps(entry) + b"\n"


class JsonLinesSink(MessageSink):
    def __init__(self, output: BinaryIO, dead_letters: BinaryIO, *, output_topic: str, dlq_topic: str) -> None:
        self._files = {output_topic: output, dlq_topic: dead_letters}
        self._dlq_topic = dlq_topic
        self._callbacks: list[DeliveryCallback] = []

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        target = self._files[topic]
        if topic == self._dlq_topic:
            target.write(dead_letter_line(value, headers))
        else:
            target.write((value or b"") + b"\n")
        self._callbacks.append(on_delivery)

    def poll(self, timeout_s: float) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(None)

    def flush(self, timeout_s: float) -> bool:
        while self._callbacks:
            self.poll(0)
        for target in self._files.values():
            target.flush()
        return True

    def close(self) -> None:
        self.flush(0)
