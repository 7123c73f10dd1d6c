"""UTC hour and day buckets on integer microseconds, half-open `[start, end)`."""

from __future__ import annotations

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
HOURS_PER_DAY = 24


def hour_of(us: int) -> int:
    """Hours since the epoch of the hour bucket holding `us` (floor, also before 1970)."""
    return us // HOUR_US


def day_of(us: int) -> int:
    """Days since the epoch of the UTC date holding `us`."""
    return us // DAY_US


def is_hour_aligned(us: int) -> bool:
    return us % HOUR_US == 0
