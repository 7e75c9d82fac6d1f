"""Unit-test hygiene shared by every module here."""

import logging
from collections.abc import Iterator

import pytest
from loguru import logger


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A test that configures logging (the CLI's commands do) leaves no sink behind.

    Its loguru sink writes to the stream pytest captured for that test, which is closed afterwards: a
    later log line from a background thread (an exporter retrying, say) would fail with a "Logging error".
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if root.handlers != handlers:
        logger.remove()
        root.handlers[:] = handlers
        root.setLevel(level)
