"""UTC hour and day buckets on integer microseconds, half-open `[start, end)`."""

from __future__ import annotations

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
HOURS_PER_DAY = 24
