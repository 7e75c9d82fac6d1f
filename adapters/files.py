"""JSON-lines files as a message source and sink, so ``pipeline process`` runs the same pipeline offline.

The source is one partition whose offsets are 0-based line indexes; the sink
writes processed values to one file and turns dead letters into JSON objects
(``line``, ``reason``, ``error``, ``raw``, and ``raw_base64`` when the line is
not UTF-8) in another. ``OutputFile`` makes each output appear whole or not at
all, so a failed run leaves files that were there before untouched.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from application import dlq_headers
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
    offset = header_value(headers, dlq_headers.SOURCE_OFFSET)
    entry: dict[str, object] = {
        "line": int(offset) + 1 if offset is not None else None,
        "reason": (header_value(headers, dlq_headers.REASON) or b"").decode(),
        "error": (header_value(headers, dlq_headers.ERROR) or b"").decode("utf-8", "replace"),
        "raw": raw.decode("utf-8", "replace"),
    }
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(raw).decode()  # the exact bytes, which "raw" cannot hold
    return orjson.dumps(entry) + b"\n"


class OutputFile:
    """A file written in full or not at all: into a temporary file beside the target, renamed over it by ``commit``.

    A target that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a pipe) is written directly:
    there is nothing in it to preserve, and nothing can be renamed over it.
    """

    def __init__(self, target: str | Path) -> None:
        self.name = str(target)
        self._target = Path(target)
        self._temporary: Path | None = None
        self._stream: BinaryIO | None = None

    def open(self) -> BinaryIO:
        """Create the temporary file (or open the device); raises OSError naming the target."""
        try:
            existing = self._target.stat()
        except FileNotFoundError:
            existing = None
        except OSError as error:
            error.filename = self.name
            raise
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            self._stream = open(self._target, "wb")  # noqa: SIM115 - closed by commit() or discard()
            return self._stream
        self._target = self._target.resolve()  # through a symlink: replace the file it points to, not the link
        try:
            handle, temporary = tempfile.mkstemp(
                prefix=f".{self._target.name}.", suffix=".tmp", dir=self._target.parent
            )
        except OSError as error:
            error.filename = self.name
            raise
        self._temporary = Path(temporary)
        os.chmod(handle, stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask())
        self._stream = os.fdopen(handle, "wb")
        return self._stream

    def finish(self) -> None:
        """Flush everything to disk; raises OSError naming the target. The target is not touched yet."""
        if self._stream is None:
            return
        try:
            self._stream.flush()
            if self._temporary is not None:
                os.fsync(self._stream.fileno())
            self._stream.close()
        except OSError as error:
            error.filename = self.name
            raise
        self._stream = None

    def commit(self) -> None:
        """``finish``, then put the file in place (finish every output first, so renames are all that is left)."""
        self.finish()
        if self._temporary is not None:
            try:
                os.replace(self._temporary, self._target)
            except OSError as error:
                error.filename = self.name
                raise
            self._temporary = None

    def discard(self) -> None:
        """Drop what was written; the target stays as it was. Safe to call after ``commit`` or twice."""
        if self._stream is not None:
            with contextlib.suppress(OSError):  # a full disk refuses the last flush too: the file goes anyway
                self._stream.close()
            self._stream = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


class JsonLinesSink(MessageSink):
    """Writes to two open files (``names``: topic -> the file's name for messages).

    A failed write (a full disk) is kept in ``error`` and reported through ``on_failure``; the record and
    every later one are then acknowledged without being written, so the pipeline stops cleanly instead
    of waiting for deliveries that cannot happen. The caller must check ``error``: the run has failed.
    """

    def __init__(
        self,
        output: BinaryIO,
        dead_letters: BinaryIO,
        *,
        output_topic: str,
        dlq_topic: str,
        names: Mapping[str, str] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._files = {output_topic: output, dlq_topic: dead_letters}
        self._names = dict(names or {})
        self._dlq_topic = dlq_topic
        self._callbacks: list[DeliveryCallback] = []
        self._on_failure = on_failure
        self.error: OSError | None = None

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        target = self._files[topic]
        self._callbacks.append(on_delivery)
        if self.error is not None:
            return
        try:
            if topic == self._dlq_topic:
                target.write(dead_letter_line(value, headers))
            else:
                target.write((value or b"") + b"\n")
        except OSError as error:
            self._failed(topic, error)

    def _failed(self, topic: str, error: OSError) -> None:
        error.filename = self._names.get(topic, getattr(self._files[topic], "name", topic))
        if self.error is None:
            self.error = error
            if self._on_failure is not None:
                self._on_failure()

    def poll(self, timeout_s: float) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(None)

    def flush(self, timeout_s: float) -> bool:
        while self._callbacks:
            self.poll(0)
        for topic, target in self._files.items():
            if self.error is not None:
                break
            try:
                target.flush()
            except OSError as error:
                self._failed(topic, error)
        return True

    def close(self) -> None:
        self.flush(0)
