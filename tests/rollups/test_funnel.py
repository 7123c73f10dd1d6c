"""Journey transitions: steps in any order, t1 only moves earlier, reached is a prefix."""

from __future__ import annotations

import pytest

from pulse.rollups.funnel import FunnelSpec, apply_step, position, reached

SPEC = FunnelSpec(("picked_up", "interested", "qualified"))


@pytest.mark.parametrize(("steps", "expected"), [
    ([], None),
    ([("interested", 5)], None),                                 # no S1: not in the funnel
    ([("picked_up", 5)], (5, 0)),
    ([("picked_up", 5), ("picked_up", 3)], (3, 0)),              # an earlier S1 moves t1
    ([("picked_up", 3), ("picked_up", 5)], (3, 0)),              # a later one does not
    ([("picked_up", 5), ("qualified", 2)], (5, 0)),              # S1 and S3 without S2: step 1
    ([("qualified", 9), ("interested", 1), ("picked_up", 5)], (5, 2)),  # any order
    ([("interested", 1), ("picked_up", -7)], (-7, 1)),           # before 1970 too
])
def test_position_is_t1_hour_and_reached_step(steps, expected):
    packed = None
    for label, hour in steps:
        index = SPEC.index(label)
        assert index is not None
        packed = apply_step(packed, index, hour)
    assert position(packed) == expected


@pytest.mark.parametrize(("mask", "expected"), [(0, 0), (0b1, 1), (0b10, 0), (0b11, 2),
                                                 (0b101, 1), (0b111, 3), (0b1111, 4)])
def test_reached_is_the_longest_prefix(mask: int, expected: int):
    assert reached(mask) == expected


def test_labels_that_are_not_steps_are_ignored():
    assert SPEC.index("voicemail") is None
    assert SPEC.index(None) is None


def test_applying_a_step_twice_changes_nothing():
    once = apply_step(apply_step(None, 0, 4), 1, 6)
    assert apply_step(once, 1, 2) == once
    assert apply_step(once, 0, 4) == once
