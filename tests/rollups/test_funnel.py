"""Journey transitions: steps in any order, t1 only moves earlier, reached is a prefix,
and the times a journey drops never change a reach under either order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups import funnel
from pulse.rollups.funnel import FunnelSpec, apply_step, position, reached_any, times

SPEC = FunnelSpec(("picked_up", "interested", "qualified"))
N = len(SPEC.steps)
HOUR = 3_600_000_000


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
    journey = None
    for label, hour in steps:
        index = SPEC.index(label)
        assert index is not None
        journey = apply_step(journey, N, index, hour * HOUR + 17)
    assert position(journey, N, HOUR) == expected


def test_labels_that_are_not_steps_are_ignored():
    assert SPEC.index("voicemail") is None
    assert SPEC.index(None) is None


def test_applying_a_step_twice_changes_nothing():
    once = apply_step(apply_step(None, N, 0, 4), N, 1, 6)
    assert apply_step(once, N, 1, 6) == once
    assert apply_step(once, N, 0, 4) == once
    assert apply_step(once, N, 1, 9) == once  # later than the kept S2: it can never matter


def sequence_reach(sets: list[list[int]]) -> list[int | None]:
    """g_j of the contract's `order=sequence`, from every time of every step."""
    out: list[int | None] = []
    previous: int | None = None
    for j, times_j in enumerate(sets):
        if j == 0:
            g = min(times_j) if times_j else None
        elif previous is None:
            g = None
        else:
            later = [t for t in times_j if t >= previous]
            g = min(later) if later else None
        out.append(g)
        previous = g
    return out


def any_reach(sets: list[list[int]]) -> list[int | None]:
    out: list[int | None] = []
    latest: int | None = None
    for times_j in sets:
        if not times_j or (out and out[-1] is None):
            out.append(None)
            continue
        latest = min(times_j) if latest is None else max(latest, min(times_j))
        out.append(latest)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, N - 1), st.integers(0, 30)), max_size=25))
def test_kept_times_give_every_reach_the_full_sets_give(events):
    journey, full = None, [[] for _ in range(N)]
    for step, at in events:
        journey = apply_step(journey, N, step, at)
        full[step].append(at)
        kept = times(journey, N)
        assert sequence_reach(kept) == sequence_reach(full)
        assert any_reach(kept) == any_reach(full)
        assert reached_any(kept) == next((k for k, s in enumerate(full) if not s), N)


@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(0, n - 1), st.integers(-(2**62), 2**62))))
def test_a_first_step_is_what_the_general_rule_makes_of_it(case: tuple[int, int, int]):
    """`advance` takes a short way for a journey's first step; it must land where
    adding the step to an empty journey's times and pruning them lands."""
    steps, step, at_us = case
    sets: list[list[int]] = [[] for _ in range(steps)]
    sets[step] = [at_us]
    kept = funnel.prune(sets)
    reach = funnel.reached_any(kept)
    t1 = funnel.first_step_time(kept)
    expected = None if t1 is None else (t1 // HOUR, reach - 1)
    assert funnel.advance(None, steps, step, at_us, HOUR) == (funnel.pack(kept), None, expected)
