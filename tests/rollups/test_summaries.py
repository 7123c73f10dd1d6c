"""The summaries' format and planning: hashes both sides agree on, and ranges split
into what summed rows answer and what the events answer, without a gap or overlap."""

from __future__ import annotations

import duckdb
from hypothesis import given
from hypothesis import strategies as st

from pulse.rollups import summaries
from pulse.rollups.summaries import Manifest, SummaryDay
from pulse.rollups.windows import DAY_US, HOUR_US


def test_the_id_hash_is_the_same_in_sql_and_python():
    ids = ["ev-1", "", "é-ü-😀", "a" * 300]
    db = duckdb.connect()
    got = [row[0] for row in db.execute(
        f"SELECT {summaries.ID_HASH_SQL} FROM (SELECT unnest($ids) AS id)",
        {"ids": ids}).fetchall()]
    assert got == [summaries.id_hash(i) for i in ids]


def test_a_manifest_reads_back_and_says_what_it_fits():
    day = SummaryDay(20_000, ("a.parquet",), "d", spread=False, crossing=True)
    manifest = Manifest(summaries.FORMAT, 3, 30.0, ("s1", "s2"), (day,))
    assert summaries.decode(summaries.encode(manifest)) == manifest
    assert not day.clean
    assert manifest.fits(30.0, ("s1", "s2"))
    assert not manifest.fits(31.0, ("s1", "s2")) and not manifest.fits(30.0, ("s1",))
    other = summaries.encode(Manifest(summaries.FORMAT + 1, 3, 30.0, (), ()))
    assert summaries.decode(other) is None and summaries.decode(b"[]") is None


def covered(spans: list[tuple[int, int]]) -> set[int]:
    """The minutes spans cover (ranges here start and end on whole minutes)."""
    return {m for a, b in spans for m in range(a // 60_000_000, b // 60_000_000)}


minute = st.integers(0, 6 * 24 * 60).map(lambda m: m * 60_000_000)


@given(st.lists(st.tuples(minute, minute), min_size=1, max_size=3),
       st.sets(st.integers(0, 6)))
def test_split_covers_each_range_once_with_whole_hours_of_summarized_days_only(spans, days):
    ranges = sorted((min(a, b), max(a, b) + 60_000_000) for a, b in spans)
    merged: list[tuple[int, int]] = []
    for a, b in ranges:  # ranges given to split are disjoint
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    whole_days, hours, rest = summaries.split(merged, days)
    parts = [covered(whole_days), covered(hours), covered(rest)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(covered(merged))
    assert set().union(*parts) == covered(merged)
    for a, b in whole_days:
        assert a % DAY_US == 0 and b % DAY_US == 0
        assert set(range(a // DAY_US, b // DAY_US)) <= days
    for a, b in hours:
        assert a % HOUR_US == 0 and b % HOUR_US == 0 and a // DAY_US in days
    for a, b in rest:  # no whole hour of a summarized day is left to the events
        for hour in range(-(-a // HOUR_US) * HOUR_US, b - HOUR_US + 1, HOUR_US):
            assert hour // DAY_US not in days
    assert summaries.days_of(merged) == {d for a, b in merged
                                         for d in range(a // DAY_US, (b - 1) // DAY_US + 1)}
