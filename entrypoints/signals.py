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


class GracefulStop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            log.warning("second %s: exiting immediately (uncommitted records will be re-read)", name)
            os._exit(128 + signum)
        log.info("%s received: finishing in-flight records, committing, leaving the group", name)
        self.event.set()

    def install(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> GracefulStop:
        for signum in signals:
            signal.signal(signum, self._handle)
        return self
