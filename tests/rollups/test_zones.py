"""Local buckets and wall time in both dialects, across DST and in half-hour zones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups import zones
from pulse.rollups.windows import DAY_US, HOUR_US

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(text: str) -> int:
    """RFC 3339 -> µs."""
    return int((datetime.fromisoformat(text) - EPOCH).total_seconds()) * 1_000_000


def lengths(b: zones.Buckets, to_us: int) -> list[float]:
    ends = [*b.starts[1:], to_us]
    return [(e - s) / HOUR_US for s, e in zip(b.starts, ends, strict=True)]


@pytest.mark.parametrize(("name", "day", "hours"), [
    ("Europe/Berlin", "2026-03-29", 23), ("Europe/Berlin", "2026-10-25", 25),
    ("America/New_York", "2026-03-08", 23), ("America/New_York", "2026-11-01", 25),
    ("Asia/Kolkata", "2026-03-29", 24), ("Australia/Lord_Howe", "2026-04-05", 24.5),
    ("UTC", "2026-03-29", 24),
])
def test_a_local_day_is_23_24_or_25_hours_long(name, day, hours):
    z = zones.zone(name)
    d = date.fromisoformat(day)
    start = zones.day_start(z, (d - EPOCH.date()).days)
    end = zones.day_start(z, (d - EPOCH.date()).days + 1)
    assert (end - start) / HOUR_US == hours
    local = datetime.fromtimestamp(start / 1e6, z)
    assert (local.date(), local.hour, local.minute) == (d, 0, 0)
    b = zones.buckets(z, start, end, DAY_US)
    assert b.starts == [start] and lengths(b, end) == [hours]


def test_day_buckets_start_at_local_midnight_and_carry_across_a_range():
    z = zones.zone("Europe/Berlin")
    b = zones.buckets(z, us("2026-03-27T12:00:00+00:00"), us("2026-03-31T00:00:00+00:00"),
                      DAY_US)
    assert b.starts == [us(t) for t in ("2026-03-27T00:00:00+01:00", "2026-03-28T00:00:00+01:00",
                                         "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00",
                                         "2026-03-31T00:00:00+02:00")]
    assert b.hour_aligned


def test_hour_buckets_repeat_a_local_hour_and_follow_half_hour_zones():
    berlin = zones.buckets(zones.zone("Europe/Berlin"), us("2026-10-25T00:00:00+00:00"),
                           us("2026-10-25T03:00:00+00:00"), HOUR_US)
    local = [datetime.fromtimestamp(s / 1e6, zones.zone("Europe/Berlin")).isoformat()
             for s in berlin.starts]
    assert local == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
                     "2026-10-25T03:00:00+01:00"]
    kolkata = zones.buckets(zones.zone("Asia/Kolkata"), us("2026-01-01T00:00:00+00:00"),
                            us("2026-01-01T02:00:00+00:00"), HOUR_US)
    assert kolkata.starts == [us("2025-12-31T23:30:00+00:00"), us("2026-01-01T00:30:00+00:00"),
                              us("2026-01-01T01:30:00+00:00")]
    assert not kolkata.hour_aligned
    lord_howe = zones.buckets(zones.zone("Australia/Lord_Howe"), us("2026-04-04T14:00:00+00:00"),
                              us("2026-04-04T17:00:00+00:00"), HOUR_US)
    # At 02:00 (+11) the clock goes back to 01:30 (+10:30): 01:00 local lasts 90 minutes.
    assert lengths(lord_howe, us("2026-04-04T17:00:00+00:00")) == [1.5, 1.0, 0.5]


def test_a_skipped_midnight_starts_the_date_at_the_transition():
    z = zones.zone("America/Havana")  # 2026-03-08 00:00 -> 01:00
    start = zones.day_start(z, (date(2026, 3, 8) - EPOCH.date()).days)
    assert datetime.fromtimestamp(start / 1e6, z).isoformat() == "2026-03-08T01:00:00-04:00"
    fall = zones.buckets(z, us("2026-10-31T12:00:00+00:00"), us("2026-11-03T12:00:00+00:00"),
                         DAY_US)  # 2026-11-01 01:00 -> 00:00: one 25-hour day
    assert lengths(fall, us("2026-11-03T12:00:00+00:00"))[1:3] == [25, 24]


def test_unknown_zones_are_refused():
    for name in ("Mars/Olympus", "europe/berlin", "../etc/passwd", "", "localtime"):
        with pytest.raises(zones.UnknownZone):
            zones.zone(name)


@pytest.mark.parametrize(("text", "name", "want"), [
    ("2026-11-02T00:30:00+00:00", "UTC", (0, 0)),  # a Monday
    ("2026-11-01T23:30:00+00:00", "Asia/Kolkata", (0, 5)),
    ("2026-11-02T03:59:59+00:00", "America/New_York", (6, 22)),
    ("1969-12-31T23:00:00+00:00", "UTC", (2, 23)),  # before the epoch: a Wednesday
])
def test_weekday_and_hour_of_local_wall_time(text, name, want):
    t = us(text)
    segs = zones.segments(zones.zone(name), t, t + 1)
    assert zones.weekday_hour(zones.local_us(t, segs)) == want


NAMES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "America/Havana", "Asia/Kathmandu"]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(NAMES), st.integers(-400, 400), st.integers(1, 30 * 24),
       st.sampled_from([HOUR_US, DAY_US]),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=30))
def test_the_sql_dialect_finds_the_same_buckets_and_wall_time(name, day, hours, width, picks):
    z = zones.zone(name)
    frm = us("2026-03-01T00:00:00+00:00") + day * DAY_US + 1_234_567
    to = frm + hours * HOUR_US
    b = zones.buckets(z, frm, to, width)
    assert b.starts[0] <= frm < (b.starts[1] if len(b.starts) > 1 else to)
    assert all(a < c for a, c in zip(b.starts, b.starts[1:], strict=False))
    times = [frm + p * (to - frm) // 10**6 for p in picks] + [s for s in b.starts if s >= frm]
    stamps = [datetime.fromtimestamp(t / 1e6, UTC).replace(microsecond=t % 10**6)
              for t in times]
    rows = duckdb.connect().execute(
        f"SELECT epoch_us(ts), {b.sql('ts')}, "
        f"{zones.weekday_hour_sql(zones.local_sql('ts', b.segments))} "
        "FROM (SELECT unnest($t) AS ts)", {"t": stamps}).fetchall()
    assert sorted(r[0] for r in rows) == sorted(times)
    for t, start, cell in rows:
        local = datetime.fromtimestamp(t // 1_000_000, z)
        assert start == b.start_of(t) and start <= t
        assert cell == local.weekday() * 24 + local.hour
        assert zones.weekday_hour(zones.local_us(t, b.segments)) == (local.weekday(), local.hour)
        edge = datetime.fromtimestamp(start / 1e6, z)
        if width == HOUR_US:
            assert (edge.minute, edge.second) == (0, 0) and start <= t < start + 2 * HOUR_US
        else:
            assert edge.date() == local.date() or start == b.starts[0]
