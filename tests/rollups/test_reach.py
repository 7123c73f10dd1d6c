"""Funnel options one journey at a time, and the SQL dialect against them."""

from __future__ import annotations

import math

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups import reach
from pulse.rollups.reach import FunnelOptions

D = 86_400 * reach.US_PER_S
NOV3, NOV5, DEC2, OCT28 = 3 * D, 5 * D, 32 * D, -3 * D
STEPS = ("picked_up", "interested", "qualified")


@pytest.mark.parametrize(("times", "order", "want"), [
    # The contract's example: S1 Nov 3, S3 Nov 5, S2 Dec 2.
    (([NOV3], [DEC2], [NOV5]), "any", [NOV3, DEC2, DEC2]),
    (([NOV3], [DEC2], [NOV5]), "sequence", [NOV3, DEC2, None]),
    # t1 is the earliest S1, also when it arrives late.
    (([NOV3, OCT28], [NOV5], []), "any", [OCT28, NOV5, None]),
    # Steps before t1 count under any, not under sequence.
    (([NOV5], [NOV3], [DEC2]), "any", [NOV5, NOV5, DEC2]),
    (([NOV5], [NOV3], [DEC2]), "sequence", [NOV5, None, None]),
    (([NOV5], [NOV3, DEC2], [DEC2]), "sequence", [NOV5, DEC2, DEC2]),
    # Equal times are in sequence.
    (([NOV3], [NOV3], [NOV3]), "sequence", [NOV3, NOV3, NOV3]),
    # A missing step ends the journey's reach, whatever comes after it.
    (([NOV3], [], [NOV5]), "any", [NOV3, None, None]),
    (([NOV3], [], [NOV5]), "sequence", [NOV3, None, None]),
    (([], [NOV3], [NOV5]), "any", [None, None, None]),
    # Sequence takes the earliest time at or after the previous step, not the first.
    (([NOV5, NOV3], [NOV3 + 1, DEC2], [NOV5 - 1]), "sequence", [NOV3, NOV3 + 1, NOV5 - 1]),
])
def test_reach_times(times, order, want):
    assert reach.reach_times(times, order) == want


@pytest.mark.parametrize(("times", "window_s", "want"), [
    ([NOV3, NOV5, DEC2], None, 3),
    ([NOV3, NOV5, DEC2], 2 * 86_400, 2),  # exactly the window: reached
    ([NOV3, NOV5, DEC2], 2 * 86_400 - 1, 1),
    ([NOV3, None, None], None, 1),
    ([None, None, None], None, 0),
    ([NOV3, NOV3, NOV3], 1, 3),
])
def test_reached_step(times, window_s, want):
    window_us = None if window_s is None else window_s * reach.US_PER_S
    assert reach.reached_step(times, window_us) == want


def test_drop_offs_are_the_step_after_the_last_reached():
    assert [reach.dropped_at(r, 3) for r in (0, 1, 2, 3)] == [None, 2, 3, None]


@pytest.mark.parametrize("n", range(1, 42))
def test_median_and_p90_indices(n):
    assert reach.lower_median_index(n) == math.floor((n - 1) / 2)
    assert reach.p90_index(n) == math.ceil(round(0.9 * n, 9)) - 1


def test_summarize():
    assert reach.summarize([]) == reach.Durations(0, 0, None, None)
    assert reach.summarize([7]) == reach.Durations(1, 7, 7, 7)
    got = reach.summarize([40, 10, 30, 20])  # lower median: 20, nearest-rank p90: 40
    assert got == reach.Durations(4, 100, 20, 40)
    ten = reach.summarize(range(10, 0, -1))  # p90 of 10 values is the 9th
    assert (ten.median_us, ten.p90_us) == (5, 9)


def test_options_are_checked():
    with pytest.raises(ValueError):
        FunnelOptions(order="random")
    with pytest.raises(ValueError):
        FunnelOptions(window_s=0)
    assert FunnelOptions().is_default and not FunnelOptions(window_s=5).is_default


times = st.lists(st.integers(-5, 5).map(lambda h: h * 3_600_000_000)
                 | st.integers(-10**12, 10**12), max_size=3)
journey = st.tuples(times, times, times, st.lists(st.just(0), max_size=2))


@settings(max_examples=20, deadline=None)
@given(st.lists(journey, min_size=1, max_size=12),
       st.sampled_from(reach.ORDERS), st.none() | st.sampled_from([1, 3600, 7200, 10**6]))
def test_the_sql_dialect_is_the_python_definition(journeys, order, window_s):
    options = FunnelOptions(order, window_s)
    rows = []
    for i, (s1, s2, s3, voicemail) in enumerate(journeys):
        for label, ts in ((STEPS[0], s1), (STEPS[1], s2), (STEPS[2], s3),
                          ("voicemail", voicemail)):
            rows += [(f"c{i}", label, t) for t in ts]
    db = duckdb.connect()
    db.execute("CREATE TABLE events AS SELECT 'x' AS campaign_id, c AS customer_id, "
               "'funnel_step' AS event_type, label, make_timestamp(us)::TIMESTAMPTZ "
               "AS occurred_at FROM (SELECT unnest($c) AS c, unnest($l) AS label, "
               "unnest($t) AS us)", {"c": [r[0] for r in rows] or ["none"],
                                     "l": [r[1] for r in rows] or ["none"],
                                     "t": [r[2] for r in rows] or [0]})
    sql, params = reach.journeys_sql(STEPS, options)
    got = {c: (reached, d2, d3) for _, c, _, reached, d2, d3 in db.execute(sql, params).fetchall()}
    want = {}
    for i, (s1, s2, s3, _) in enumerate(journeys):
        r = reach.reach_times([s1, s2, s3], order)
        k = reach.reached_step(r, options.window_us)
        if k:
            want[f"c{i}"] = (k, r[1] - r[0] if k >= 2 else None, r[2] - r[0] if k >= 3 else None)
    assert got == want
    ttc = db.execute(reach.time_to_convert_sql(3, f"({sql})"), params).fetchall()
    for step, n, total, median, p90 in ttc:
        expected = reach.summarize(d[step - 1] for d in want.values() if d[step - 1] is not None)
        assert (n, total, median, p90) == (expected.count, expected.total_us,
                                           expected.median_us, expected.p90_us)
