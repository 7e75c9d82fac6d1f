"""A per-host instance slot: unique among live processes, stable across restarts.

Exactly-once mode needs a transactional id that no two live instances share
(the newer would fence the older, and they would take turns crashing), and that
a restarted instance takes back (so it fences its crashed predecessor at once
instead of waiting for the broker's transaction timeout). The lowest slot whose
lock file nobody holds gives both; the lock dies with the process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_SLOTS = 1024
_held: dict[str, tuple[int, int]] = {}  # scope -> (slot, open file descriptor kept for the process's life)


def claim_slot(scope: str, directory: Path | None = None) -> int | None:
    """The slot this process holds for ``scope``, claiming the lowest free one; None if locks are unavailable."""
    if scope in _held:
        return _held[scope][0]
    directory = directory or Path(tempfile.gettempdir())
    safe_scope = re.sub(r"[^A-Za-z0-9_.-]", "_", scope)[:150]
    for slot in range(_MAX_SLOTS):
        path = directory / f"user-login-pipeline.{safe_scope}.{slot}.lock"
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as error:
            log.warning("cannot claim an instance slot in %s (%s); falling back to the process id", directory, error)
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        _held[scope] = (slot, descriptor)
        return slot
    return None
