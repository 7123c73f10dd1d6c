"""The reader's store: totals stay equal to a fresh sum after every kind of change."""

from __future__ import annotations

from pulse.rollups import checkpoint
from pulse.rollups.journal import Claim, Delta
from pulse.rollups.metrics import Measures
from pulse.rollups.store import ALL, RollupStore

DAY = 24


def delta(seq: int, buckets: list[tuple[str, str | None, int, Measures]],
          horizon_hour: int | None = None) -> Delta:
    return Delta("s", seq, {}, {}, buckets, b"", [], None, horizon_hour, {}, {}, {}, 0, {})


def body(partition: int, buckets: list[tuple[str, str | None, int, Measures]]
         ) -> checkpoint.Body:
    return checkpoint.Body(
        format=checkpoint.FORMAT, partition=partition,
        definitions=checkpoint.Definitions(("a",), 30.0, 48, 2), epoch="e", offset=9,
        session="r", seq=-1, written_at_us=0, applied={}, counters={"read": 1},
        watermark_us=None, horizon_hour=None, progress={}, upstream={}, lake={}, keyed_next=-1,
        buckets=buckets, journeys=[], runs=[], stats={})


def test_repeated_totals_follow_new_buckets_and_expiry():
    store = RollupStore()
    fold = store.fold(0)
    fold.feed(Claim("s"), 0)
    fold.feed(delta(1, [("acme", "spring", 10 * DAY + 5, Measures(events=1, calls=1)),
                        ("acme", None, 11 * DAY, Measures(events=2))]), 1)
    whole = (10 * DAY, 12 * DAY)
    assert store.total("acme", ALL, *whole).events == 3
    assert store.total("acme", "spring", *whole).calls == 1
    assert store.total("acme", ALL, 10 * DAY + 6, 12 * DAY).events == 2

    fold.feed(delta(2, [("acme", "spring", 10 * DAY + 7, Measures(events=4, calls=4))]), 2)
    assert store.total("acme", ALL, *whole).events == 7
    assert store.total("acme", "spring", *whole).calls == 5
    assert store.total("acme", ALL, 10 * DAY + 6, 12 * DAY).events == 6

    fold.feed(delta(3, [], horizon_hour=11 * DAY), 3)  # retention moves past day 10
    assert store.total("acme", ALL, *whole).events == 2
    assert store.total("acme", "spring", *whole).calls == 0


def test_a_tenant_is_the_sum_of_every_partition_and_a_reset_replaces_one_part():
    store = RollupStore()
    for q, n in ((0, 1), (1, 10)):
        fold = store.fold(q)
        fold.feed(Claim("s"), 0)
        fold.feed(delta(1, [("acme", "spring", 5, Measures(events=n, calls=n))]), 1)
    assert store.total("acme", ALL, 0, 10).calls == 11
    assert store.ready(2) and not store.ready(3)

    store.load(1, body(1, [("acme", "spring", 5, Measures(events=100, calls=100))]))
    assert store.total("acme", ALL, 0, 10).calls == 101
    assert store.total("acme", "spring", 0, 10).calls == 101
    store.forget(0)
    assert store.total("acme", ALL, 0, 10).calls == 100 and not store.ready(2)


def test_only_hours_every_partition_keeps_are_answered():
    store = RollupStore()
    for q, horizon in ((0, 3), (1, 6)):
        fold = store.fold(q)
        fold.feed(Claim("s"), 0)
        fold.feed(delta(1, [("acme", None, h, Measures(events=1)) for h in range(8)],
                        horizon_hour=horizon), 1)
    assert store.horizon_hour() == 6
    assert store.total("acme", ALL, 0, 8).events == 4  # hours 6 and 7, from both partitions
