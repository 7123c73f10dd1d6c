"""The cohort funnel of contract section 3, as state transitions of one journey.

A journey is (tenant, campaign, customer). What the funnel needs of it fits in one int:
the set of steps it ever had (a bitmask, bit i = step S(i+1)) and the hour of its
earliest S1 (`t1`). Its reached step is the longest prefix S1..Sk in the mask, so
steps can arrive at any time and in any order. Applying a step is idempotent and
commutative, which is why replays and shuffles cannot change the answer; when the
journey moves (earlier `t1`, higher step) the caller retracts its old bucket and adds
the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

_MASK_BITS = 16
_MASK = (1 << _MASK_BITS) - 1


@dataclass(frozen=True)
class FunnelSpec:
    """The ordered steps (`PULSE_FUNNEL_STEPS`)."""

    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {step: i for i, step in enumerate(self.steps)})

    def index(self, label: str | None) -> int | None:
        """Position of `label` among the steps, or None for labels that are not steps."""
        return self._index.get(label) if label is not None else None  # type: ignore[attr-defined]


def pack(t1_hour: int, mask: int) -> int:
    return (t1_hour << _MASK_BITS) | mask


def unpack(packed: int) -> tuple[int, int]:
    """(t1_hour, mask); t1_hour only means something when bit 0 (S1) is set."""
    return packed >> _MASK_BITS, packed & _MASK


def reached(mask: int) -> int:
    """The longest prefix S1..Sk present in `mask` (0 when S1 is missing)."""
    return (~mask & (mask + 1)).bit_length() - 1


def apply_step(packed: int | None, step: int, hour: int) -> int:
    """The journey after a funnel_step event for step index `step` at `hour`."""
    if packed is None:
        return pack(hour if step == 0 else 0, 1 << step)
    t1_hour, mask = unpack(packed)
    if step == 0:
        t1_hour = min(t1_hour, hour) if mask & 1 else hour
    return pack(t1_hour, mask | (1 << step))


def position(packed: int | None) -> tuple[int, int] | None:
    """Where the journey counts: (t1_hour, reached - 1), or None before it has S1."""
    if packed is None:
        return None
    t1_hour, mask = unpack(packed)
    if not mask & 1:
        return None
    return t1_hour, reached(mask) - 1
