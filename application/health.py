"""Liveness and readiness as the pipeline sees them; an adapter serves them over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from application.ports import Clock


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


class HealthState:
    """Updated by the pipeline loop with plain attribute writes, read by the health endpoint's thread."""

    def __init__(self, clock: Clock | None = None, stall_after_s: float = 60.0) -> None:
        self._clock = clock or Clock()
        self.stall_after_s = stall_after_s
        self.broker_available = False
        self.running = False
        self.assigned_partitions = 0
        self.last_loop_at = self._clock.monotonic()
        self.last_error = ""  # the cause, in one line, while the broker cannot be used (BrokerUnavailable.summary)
        # One line per partition stopped at a dead letter the DLQ refuses for good (replaced, never mutated).
        self.partition_stalls: tuple[str, ...] = ()

    def heartbeat(self) -> None:
        self.last_loop_at = self._clock.monotonic()

    def stalled(self) -> bool:
        return self._clock.monotonic() - self.last_loop_at > self.stall_after_s

    def alive(self) -> bool:
        return not self.stalled()

    def readiness(self) -> Readiness:
        if not self.running:
            return Readiness(False, "pipeline not running")
        if not self.broker_available:
            return Readiness(False, self.last_error or "broker unreachable")
        if self.partition_stalls:
            more = f" (and {len(self.partition_stalls) - 1} more)" if len(self.partition_stalls) > 1 else ""
            return Readiness(False, self.partition_stalls[0] + more)
        if self.assigned_partitions == 0:
            return Readiness(False, "no partitions assigned")
        if self.stalled():
            return Readiness(False, "processing loop stalled")
        return Readiness(True, "ok")
