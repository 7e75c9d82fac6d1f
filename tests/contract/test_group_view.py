"""MessageSource.group_view reads the broker's description of the group alike for every adapter."""

from __future__ import annotations

import time
import uuid

from tests.contract.kits import AdapterKit, Recorder

DEADLINE_S = 45.0


def test_a_member_with_its_assignment_sees_a_stable_group_it_belongs_to(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=3)
    source = kit.source(f"g-{uuid.uuid4().hex[:8]}")
    recorder = Recorder()
    source.subscribe([topic], recorder)
    try:
        deadline = time.monotonic() + DEADLINE_S
        view = None
        while time.monotonic() < deadline:
            source.poll_batch(10, 0.2)
            if recorder.assigned:
                view = source.group_view()
                if view is not None and view.stable:
                    break
        assert view is not None, "no assignment in time"
        everything = frozenset(p for p in view.partitions if p.topic == topic)
        assert len(everything) == 3 and view.partitions == everything
        assert view.state == "Stable" and view.joined and view.members == 1
        assert view.owned == view.mine == everything == frozenset(recorder.assigned)
        assert view.unowned == []
        assert view.session_timeout_s > 0
    finally:
        source.close()
