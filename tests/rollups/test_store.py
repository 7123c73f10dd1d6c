"""The reader's store: totals stay equal to a fresh sum after every kind of change."""

from __future__ import annotations

from pulse.rollups.journal import Claim, Delta
from pulse.rollups.metrics import Measures
from pulse.rollups.store import ALL, RollupStore

DAY = 24


def delta(seq: int, buckets: list[tuple[str, str | None, int, Measures]],
          horizon_hour: int | None = None) -> Delta:
    return Delta("s", seq, {}, {}, buckets, b"", [], None, horizon_hour, {}, {})


def test_repeated_totals_follow_new_buckets_and_expiry():
    store = RollupStore()
    fold = store.fold(0)
    fold.feed(Claim("s"))
    fold.feed(delta(1, [("acme", "spring", 10 * DAY + 5, Measures(events=1, calls=1)),
                        ("acme", None, 11 * DAY, Measures(events=2))]))
    whole = (10 * DAY, 12 * DAY)
    assert store.total("acme", ALL, *whole).events == 3
    assert store.total("acme", "spring", *whole).calls == 1
    assert store.total("acme", ALL, 10 * DAY + 6, 12 * DAY).events == 2

    fold.feed(delta(2, [("acme", "spring", 10 * DAY + 7, Measures(events=4, calls=4))]))
    assert store.total("acme", ALL, *whole).events == 7
    assert store.total("acme", "spring", *whole).calls == 5
    assert store.total("acme", ALL, 10 * DAY + 6, 12 * DAY).events == 6

    fold.feed(delta(3, [], horizon_hour=11 * DAY))  # retention moves past day 10
    assert store.total("acme", ALL, *whole).events == 2
    assert store.total("acme", "spring", *whole).calls == 0
