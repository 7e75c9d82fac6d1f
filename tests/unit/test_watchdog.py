"""The hung-call watchdog both transactional adapters use (adapters/watchdog.py)."""

import logging
import threading

import pytest

from adapters.watchdog import Hung, bounded


def test_the_calls_result_and_its_exception_come_back_on_the_callers_thread() -> None:
    assert bounded("init", lambda: threading.current_thread().name, 5.0, thread_name="helper") == "helper"

    def refuse() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        bounded("commit", refuse, 5.0)


def test_without_a_slow_call_bound_a_hung_call_gives_up_silently(caplog: pytest.LogCaptureFixture) -> None:
    never = threading.Event()
    with pytest.raises(Hung, match=r"send_offsets_to_transaction did not complete within 0\.1s") as raised:
        bounded("send_offsets_to_transaction", lambda: never.wait(5.0), 0.1)
    never.set()
    assert (raised.value.what, raised.value.timeout_s) == ("send_offsets_to_transaction", 0.1)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
