"""A one-line progress display on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO


class Progress:
    """Polls ``current()`` from a background thread; never slows the loop it watches."""

    def __init__(
        self,
        label: str,
        current: Callable[[], int],
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        interval_s: float = 0.25,
    ) -> None:
        self._label = label
        self._current = current
        self._total = total
        self._stream = stream or sys.stderr
        self._interval = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self.enabled = self._stream.isatty()

    def _line(self) -> str:
        count = self._current()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = f"{count / elapsed:,.0f}/s"
        if self._total:
            share = min(count / self._total, 1.0)
            bar = "#" * int(share * 30)
            return f"\r{self._label} [{bar:<30}] {count:,}/{self._total:,} {share:6.1%} {rate}"
        return f"\r{self._label} {count:,} {rate}"

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            self._stream.write(self._line())
            self._stream.flush()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write(self._line() + "\n")
            self._stream.flush()
