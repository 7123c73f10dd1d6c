"""One journey of the cohort funnel (contract section 3), as exact state transitions.

A journey is (tenant, campaign, customer). For each step S_j it keeps the times of its
`funnel_step` events labelled S_j (µs) that can still matter under either funnel order:

- `any`: reach(k) is the latest of min E_1..min E_k, so min E_j must be kept;
- `sequence`: g_1 = min E_1 and g_j = the earliest time in E_j at or after g_(j-1). Events
  only ever add times, so every g_j can only move earlier; a time of E_j later than g_j
  can therefore never become g_j, and is dropped. What stays is g_j and the times before
  g_(j-1) (which a late, earlier S_(j-1) could still reach), or all of E_j while g_(j-1)
  is undefined.

So a journey is a handful of integers, packed into bytes, whatever order and however
late its events arrive; applying an event twice changes nothing, which is why replays
and shuffles cannot change an answer.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

Journey = bytes
"""Per step a count (uint16), then every step's kept times (int64 µs), ascending."""


@dataclass(frozen=True)
class FunnelSpec:
    """The ordered steps (`PULSE_FUNNEL_STEPS`)."""

    steps: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {step: i for i, step in enumerate(self.steps)})

    def index(self, label: str | None) -> int | None:
        """Position of `label` among the steps, or None for labels that are not steps."""
        return self._index.get(label) if label is not None else None


def times(journey: Journey | None, steps: int) -> list[list[int]]:
    """The kept times of each step, ascending."""
    if journey is None:
        return [[] for _ in range(steps)]
    counts = struct.unpack_from(f"<{steps}H", journey)
    flat = struct.unpack_from(f"<{sum(counts)}q", journey, 2 * steps)
    out, at = [], 0
    for n in counts:
        out.append(list(flat[at:at + n]))
        at += n
    return out


def pack(kept: list[list[int]]) -> Journey:
    flat = [t for step in kept for t in step]
    return struct.pack(f"<{len(kept)}H{len(flat)}q", *map(len, kept), *flat)


def prune(sets: list[list[int]]) -> list[list[int]]:
    """The times of each step that can still matter (see the module docstring)."""
    kept: list[list[int]] = []
    g_previous: int | None = None
    for j, times_j in enumerate(sets):
        if j == 0:
            kept.append(times_j[:1])
            g = times_j[0] if times_j else None
        elif g_previous is None:
            kept.append(list(times_j))
            g = None
        else:
            later = [t for t in times_j if t >= g_previous]
            g = later[0] if later else None
            kept.append([t for t in times_j if t < g_previous] + ([g] if g is not None else []))
        g_previous = g
    return kept


def apply_step(journey: Journey | None, steps: int, step: int, at_us: int) -> Journey:
    """The journey after a `funnel_step` event of step index `step` at `at_us`."""
    moved = advance(journey, steps, step, at_us, 1)
    if moved is None:
        assert journey is not None  # a first event always makes a journey
        return journey
    return moved[0]


def first_time(journey: Journey | None, steps: int) -> int | None:
    """t1: the earliest S1 (µs), or None before the journey has one."""
    return first_step_time(times(journey, steps))


def first_step_time(sets: list[list[int]]) -> int | None:
    return sets[0][0] if sets and sets[0] else None


def reached_any(sets: list[list[int]]) -> int:
    """The step reached in any order with no window: the longest prefix S1..Sk it has had."""
    k = 0
    for times_j in sets:
        if not times_j:
            break
        k += 1
    return k


def position(journey: Journey | None, steps: int, hour_us: int) -> tuple[int, int] | None:
    """Where the default funnel counts the journey: (hour of t1, reached - 1), or None
    before it has an S1."""
    if journey is None:
        return None
    return _position(times(journey, steps), hour_us)


def advance(journey: Journey | None, steps: int, step: int, at_us: int, hour_us: int
            ) -> tuple[Journey, tuple[int, int] | None, tuple[int, int] | None] | None:
    """`apply_step`, with the journey's `position` before and after (one unpacking for
    all three); None when the event changes nothing."""
    if journey is None:  # a journey's first step, the most common: nothing to prune
        return (_first_counts(steps, step) + _TIME.pack(at_us), None,
                (at_us // hour_us, 0) if step == 0 else None)
    sets = times(journey, steps)
    if at_us in sets[step]:
        return None
    before = _position(sets, hour_us)
    sets[step] = sorted([*sets[step], at_us])
    kept = prune(sets)
    new = pack(kept)
    if new == journey:
        return None
    return new, before, _position(kept, hour_us)


_TIME = struct.Struct("<q")


@functools.cache
def _first_counts(steps: int, step: int) -> bytes:
    """The counts that open a journey whose only time is one of step `step`."""
    return struct.pack(f"<{steps}H", *(int(j == step) for j in range(steps)))


def _position(sets: list[list[int]], hour_us: int) -> tuple[int, int] | None:
    t1 = first_step_time(sets)
    if t1 is None:
        return None
    return t1 // hour_us, reached_any(sets) - 1
