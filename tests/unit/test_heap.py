"""The record loop's garbage-collector settings (entrypoints/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from entrypoints import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_young_objects_get_time_to_die_before_a_collection() -> None:
    gc.set_threshold(700, 10, 10)  # the interpreter's defaults

    heap.prepare_for_record_loop()

    assert gc.get_threshold() == (heap.GEN0_THRESHOLD, heap.GEN1_THRESHOLD, heap.GEN2_THRESHOLD)
    assert heap.GEN0_THRESHOLD >= 100 * 700


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_in_the_loop_are_still_collected() -> None:
    heap.prepare_for_record_loop()

    class Node:
        partner: object

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    del first, second

    assert gc.collect() >= 2


@pytest.mark.usefixtures("restored_collector")
def test_the_demo_runs_its_loop_with_these_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from entrypoints.cli import main

    gc.set_threshold(700, 10, 10)

    assert main(["demo", "--count", "10", "--json"]) == 0

    assert '"consumed": 10' in capsys.readouterr().out
    assert gc.get_threshold()[0] == heap.GEN0_THRESHOLD
