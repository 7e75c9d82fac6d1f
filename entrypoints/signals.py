"""SIGTERM/SIGINT handling: the first signal asks for a graceful stop, the second exits at once.

Exiting at once is still safe: offsets are committed only after delivery, so
the worst case is that records are processed again, never that they are lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


_CONSUMER_STOPPING = "finishing in-flight records, committing, leaving the group"
_CONSUMER_ABANDONED = "uncommitted records will be re-read"


def _log_aside(level: int, message: str) -> threading.Thread:
    """Log from another thread: the signal may have interrupted this one inside a log call, holding its lock.

    Not a daemon: the line is written before the interpreter exits, however soon that is.
    """
    thread = threading.Thread(target=log.log, args=(level, "%s", message), name="signal-log")
    thread.start()
    return thread


class GracefulStop:
    def __init__(self, stopping: str = _CONSUMER_STOPPING, abandoned: str = _CONSUMER_ABANDONED) -> None:
        self.event = threading.Event()
        self._stopping = stopping  # what a first signal starts, in the command's own terms
        self._abandoned = abandoned  # and what a second one gives up

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            _log_aside(logging.WARNING, f"second {name}: exiting immediately ({self._abandoned})").join(0.5)
            os._exit(128 + signum)
        self.event.set()
        _log_aside(logging.INFO, f"{name} received: {self._stopping}")

    def install(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> GracefulStop:
        for signum in signals:
            signal.signal(signum, self._handle)
        return self
