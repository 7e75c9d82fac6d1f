from collections.abc import Iterator

import pytest

from tests.integration.harness import RUNNING


@pytest.fixture(autouse=True)
def no_service_outlives_its_test() -> Iterator[None]:
    yield
    while RUNNING:
        service = RUNNING.pop()
        if service.process.poll() is None:
            service.kill()
