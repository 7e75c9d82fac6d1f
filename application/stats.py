"""Running totals of one pipeline run, for summaries and for deciding when a bounded run is done."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class PipelineStats:
    consumed: int = 0
    processed: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    commits: int = 0
    abandoned: int = 0  # in flight when their partition was revoked; the next owner reprocesses them

    @property
    def finished(self) -> int:
        """Records whose output or DLQ write the broker acknowledged."""
        return self.processed + sum(self.dead_lettered.values())
