"""Whatever arrives, the processing service gives exactly one outcome and never raises."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.json_codec import OrjsonCodec
from domain.codec import StdlibJsonCodec
from domain.outcomes import Processed, Rejected
from domain.processing import LoginEventProcessor
from tests.unit.strategies import event_like, json_values

PROCESSORS = [LoginEventProcessor(codec=StdlibJsonCodec()), LoginEventProcessor(codec=OrjsonCodec())]
STAMP = "2026-11-26T12:00:00.000Z"


def _one_outcome(raw: bytes) -> None:
    for processor in PROCESSORS:
        outcome = processor.process(raw, STAMP)
        assert isinstance(outcome, Processed | Rejected)
        if isinstance(outcome, Processed):
            assert json.loads(processor.encode(outcome.event))["processed_at"] == STAMP


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _one_outcome(raw)


@settings(max_examples=500)
@given(json_values)
def test_arbitrary_json(value: object) -> None:
    _one_outcome(json.dumps(value).encode())


@settings(max_examples=500)
@given(event_like)
def test_event_shaped_json(value: dict[str, object]) -> None:
    _one_outcome(json.dumps(value, ensure_ascii=False).encode())
