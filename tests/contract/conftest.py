import pytest

from tests.contract.kits import AdapterKit, ConfluentKit, KafkaPythonKit, MemoryKit

KAFKA_KITS = {"confluent": ConfluentKit, "kafka-python": KafkaPythonKit}


@pytest.fixture(
    params=[
        "memory",
        pytest.param("confluent", marks=pytest.mark.integration),
        pytest.param("kafka-python", marks=pytest.mark.integration),
    ]
)
def kit(request: pytest.FixtureRequest) -> AdapterKit:
    if request.param == "memory":
        return MemoryKit()
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return KAFKA_KITS[request.param](bootstrap)
