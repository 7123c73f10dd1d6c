"""Time zones of contract section 3: where local buckets begin, and local wall time.

A zone's offset from UTC is constant between transitions, so a range is cut into
`Segment`s of one offset each (found with zoneinfo). From them come, in both dialects:

- hour buckets: real hours starting where the local clock reads a whole hour (half hours
  off UTC in Asia/Kolkata; a repeated local hour gives two buckets);
- day buckets: from the first instant of one local date to the first of the next, so
  23 or 25 hours across DST, and starting at the transition where midnight is skipped;
- local wall time (`local_us`), for the weekday and hour of the heatmap.

Every time here is integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from .windows import DAY_US, HOUR_US

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND_US = 1_000_000
_MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
UTC_NAME = "UTC"
_WEEKDAY_OF_EPOCH = 3
"""1970-01-01 was a Thursday (Monday = 0)."""


class UnknownZone(ValueError):
    """Not an IANA time zone name."""


_NOT_IANA = frozenset({"localtime", "posixrules"})
"""Files some systems keep beside the tz database: this machine's zone, not a name."""


@functools.cache
def _names() -> frozenset[str]:
    return (frozenset(available_timezones()) - _NOT_IANA) | {UTC_NAME}


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` (exactly as the tz database spells it)."""
    if name not in _names():
        raise UnknownZone(name)
    return ZoneInfo(name)


def _clamp(us: int) -> int:
    return min(max(us, _MIN_US), _MAX_US)


def offset_us(z: ZoneInfo, us: int) -> int:
    """The zone's offset from UTC at instant `us`."""
    offset = datetime.fromtimestamp(_clamp(us) // _SECOND_US, z).utcoffset()
    assert offset is not None
    return (offset.days * 86_400 + offset.seconds) * _SECOND_US + offset.microseconds


@functools.lru_cache(maxsize=4096)
def _transitions(z: ZoneInfo, year: int) -> tuple[tuple[int, int], ...]:
    """(instant, offset from then on) of every offset change in a UTC year.

    Sampled every hour and bisected to the second (the tz database's resolution); no
    zone has changed its offset twice within one hour.
    """
    if z.key == UTC_NAME:
        return ()
    start = (datetime(year, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
    end = start + (366 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 365) * DAY_US
    out = []
    before = offset_us(z, start - HOUR_US)
    at = start - HOUR_US
    while at < end:
        nxt = at + HOUR_US
        after = offset_us(z, nxt)
        if after != before:
            lo, hi = at, nxt
            while hi - lo > _SECOND_US:
                mid = lo + (hi - lo) // 2 // _SECOND_US * _SECOND_US
                if offset_us(z, mid) == before:
                    lo = mid
                else:
                    hi = mid
            if start <= hi < end:
                out.append((hi, after))
            before = after
        at = nxt
    return tuple(out)


@dataclass(frozen=True)
class Segment:
    start_us: int
    offset_us: int
    """In effect from `start_us` until the next segment's start."""


@functools.lru_cache(maxsize=1024)
def segments(z: ZoneInfo, from_us: int, to_us: int) -> list[Segment]:
    """The offsets in effect over [from_us, to_us); the first segment starts at from_us.

    Remembered, as dashboards ask for the same ranges again: read it, never change it.
    """
    out = [Segment(from_us, offset_us(z, from_us))]
    first_year = (_EPOCH + timedelta(microseconds=_clamp(from_us))).year
    last_year = (_EPOCH + timedelta(microseconds=_clamp(to_us))).year
    for year in range(first_year, last_year + 1):
        for at, offset in _transitions(z, year):
            if from_us < at < to_us and offset != out[-1].offset_us:
                out.append(Segment(at, offset))
    return out


def local_us(us: int, segs: list[Segment]) -> int:
    """Local wall time of `us` as microseconds of a UTC-like clock."""
    i = bisect.bisect_right([s.start_us for s in segs], us) - 1
    return us + segs[max(i, 0)].offset_us


def _floor(us: int, width: int) -> int:
    return us - us % width


def _edges(segs: list[Segment], end_us: int, width: int) -> list[int]:
    """Bucket starts in [segs[0].start_us, end_us): where the local clock reads a whole
    `width` (hour), or a local date's first instant (day)."""
    out = []
    for i, seg in enumerate(segs):
        stop = segs[i + 1].start_us if i + 1 < len(segs) else end_us
        at = seg.start_us + (-(seg.start_us + seg.offset_us)) % width
        if i and width == DAY_US:
            if at == seg.start_us:
                at += width  # a midnight the transition repeats is no new date
            before = _floor(seg.start_us - 1 + segs[i - 1].offset_us, DAY_US)
            if _floor(seg.start_us + seg.offset_us, DAY_US) > before:
                out.append(seg.start_us)  # the date begins at the transition
        while at < stop:
            out.append(at)
            at += width
    return out


@dataclass(frozen=True)
class Buckets:
    """The hour or day buckets of a range in a zone, and how an instant finds its own."""

    zone: str
    width_us: int
    starts: list[int]
    """From the bucket holding the range's start to the last starting before its end."""
    segments: list[Segment]
    """The offsets over the range."""

    def start_of(self, us: int) -> int:
        """The start of the bucket holding `us` (inside the range)."""
        return self.starts[bisect.bisect_right(self.starts, us) - 1]

    @property
    def hour_aligned(self) -> bool:
        """Every bucket edge in the range is a UTC hour boundary: the hourly rollups can
        answer."""
        return hour_aligned(self.segments)

    def sql(self, column: str) -> str:
        """DuckDB: the bucket start (µs) of the TIMESTAMPTZ `column`, inside the range."""
        us = f"epoch_us({column})"
        parts = []
        for seg in self.segments:
            grid = f"({us} - (((({us} + {seg.offset_us}) % {self.width_us}) + {self.width_us})" \
                   f" % {self.width_us}))"
            anchor = self.start_of(seg.start_us)
            parts.append((seg.start_us, f"CASE WHEN {grid} > {seg.start_us} THEN {grid} "
                                        f"ELSE {anchor} END"))
        return _piecewise(us, parts)


def hour_aligned(segs: list[Segment]) -> bool:
    """Every local hour boundary is a UTC hour boundary, and each UTC hour lies in one
    local hour: every offset is whole hours and changes on the hour."""
    return all(s.offset_us % HOUR_US == 0 for s in segs) and all(
        s.start_us % HOUR_US == 0 for s in segs[1:])


def _piecewise(us: str, parts: list[tuple[int, str]]) -> str:
    """`parts[i][1]` from `parts[i][0]` on (the first also before it)."""
    if len(parts) == 1:
        return parts[0][1]
    cases = " ".join(f"WHEN {us} < {parts[i + 1][0]} THEN {expr}"
                     for i, (_, expr) in enumerate(parts[:-1]))
    return f"(CASE {cases} ELSE {parts[-1][1]} END)"


LOOKBACK_US = 3 * DAY_US
"""Far enough before a range for the bucket holding its start to begin (a day bucket is
at most 25 hours, or 48 across the rare skipped date)."""


@functools.lru_cache(maxsize=1024)
def buckets(z: ZoneInfo, from_us: int, to_us: int, width_us: int) -> Buckets:
    """The `width_us` (HOUR_US or DAY_US) buckets of [from_us, to_us) in zone `z`.

    Remembered, as dashboards ask for the same ranges again: read it, never change it.
    """
    lead = segments(z, from_us - LOOKBACK_US, from_us + 1)
    edges = _edges(lead, from_us + 1, width_us)
    first = edges[bisect.bisect_right(edges, from_us) - 1]
    segs = segments(z, from_us, to_us)
    inside = [e for e in _edges(segs, to_us, width_us) if e > from_us]
    return Buckets(z.key, width_us, [first, *inside], segs)


def day_start(z: ZoneInfo, day: int) -> int:
    """The first instant of local date `day` (days since 1970-01-01), or of the first date
    after it when the zone skipped it."""
    midnight = day * DAY_US
    segs = segments(z, midnight - LOOKBACK_US, midnight + LOOKBACK_US)
    for edge in _edges(segs, midnight + LOOKBACK_US, DAY_US):
        if _floor(local_us(edge, segs), DAY_US) >= midnight:
            return edge
    raise AssertionError(f"no local midnight near day {day}")


def local_sql(column: str, segs: list[Segment]) -> str:
    """DuckDB: local wall time (µs) of the TIMESTAMPTZ `column`, inside the segments."""
    us = f"epoch_us({column})"
    return _piecewise(us, [(s.start_us, f"({us} + {s.offset_us})") for s in segs])


def hour_cells(hours: list[int], segs: list[Segment]) -> list[int]:
    """weekday * 24 + local hour of each UTC hour (hours since the epoch, ascending), in
    zones whose offsets are whole hours (`hour_aligned`)."""
    out: list[int] = []
    lo = 0
    for i, seg in enumerate(segs):
        end = segs[i + 1].start_us // HOUR_US if i + 1 < len(segs) else None
        hi = len(hours) if end is None else bisect.bisect_left(hours, end, lo)
        shift = seg.offset_us // HOUR_US
        out += [(((h + shift) // 24 + _WEEKDAY_OF_EPOCH) % 7) * 24 + (h + shift) % 24
                for h in hours[lo:hi]]
        lo = hi
    return out


def weekday_hour(local: int) -> tuple[int, int]:
    """(weekday, Monday = 0, and hour) of a local wall time."""
    days, within = divmod(local, DAY_US)
    return (days + _WEEKDAY_OF_EPOCH) % 7, within // HOUR_US


def weekday_hour_sql(local: str) -> str:
    """DuckDB: weekday * 24 + hour of the local wall time expression `local`."""
    day = f"(({local} - ((({local} % {DAY_US}) + {DAY_US}) % {DAY_US})) // {DAY_US})"
    hour = f"(((({local} % {DAY_US}) + {DAY_US}) % {DAY_US}) // {HOUR_US})"
    return f"((((({day} + {_WEEKDAY_OF_EPOCH}) % 7) + 7) % 7) * 24 + {hour})"
