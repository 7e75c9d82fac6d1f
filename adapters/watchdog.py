"""The hung-call watchdog: a blocking client call run on a helper thread and given up on after a bound.

Both Kafka clients have transactional calls that can wait forever on a broker that went away mid-call
(librdkafka's send_offsets_to_transaction ignoring its own timeout, confluentinc/librdkafka #5456,
#5511; kafka-python dropping a transactional request whose connection failed as it was sent). Running
the call on a daemon thread lets the caller stop waiting; the caller then abandons and replaces the
stuck client. Translating ``Hung`` into the port's errors is each adapter's business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Hung(Exception):
    """A blocking client call did not return within its bound."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what} did not complete within {timeout_s:g}s")
        self.what = what
        self.timeout_s = timeout_s


def bounded(
    what: str,
    call: Callable[[], T],
    timeout_s: float,
    *,
    slow_call_s: float | None = None,
    logger: logging.Logger = log,
    thread_name: str | None = None,
) -> T:
    """``call()`` on a daemon thread, waiting at most ``timeout_s``; its result, or what it raised; else ``Hung``.

    With ``slow_call_s``, a call still waiting after that long is reported then (a WARNING on ``logger``),
    and how long it took once it completes: an outage shorter than the timeout would otherwise pass
    without a word while the pipeline stands still.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            outcome.append((False, error))

    helper = threading.Thread(target=run, name=thread_name or f"kafka-{what}", daemon=True)
    started = time.monotonic()
    helper.start()
    if slow_call_s is not None and timeout_s > slow_call_s:
        helper.join(slow_call_s)
        if not outcome:
            logger.warning(
                "broker unavailable or unresponsive: %s has waited %gs for Kafka (gives up after %gs)",
                what, slow_call_s, timeout_s,
            )  # fmt: skip
            helper.join(timeout_s - slow_call_s)
            if outcome:
                logger.info("%s completed after %.1fs", what, time.monotonic() - started)
    else:
        helper.join(timeout_s)
    if not outcome:
        raise Hung(what, timeout_s)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    result: T = value
    return result
