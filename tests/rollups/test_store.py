"""The reader's store: totals stay equal to a fresh sum after every kind of change."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

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


durations = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 47), durations,
                          st.sampled_from(["minutes", "sms"])), min_size=1, max_size=60),
       st.randoms(use_true_random=False), st.integers(0, 60))
def test_two_readers_folding_in_any_interleaving_give_the_same_bits(records, rnd, cut):
    """Every API process folds the journal partitions in its own interleaving, and may
    start from a checkpoint: their sums must agree to the bit, not only to rounding."""
    per_partition: dict[int, list[Delta]] = {}
    for q, hour, seconds, category in records:
        m = Measures(events=2, calls=1, duration_s=seconds, usage={category: seconds / 7})
        log = per_partition.setdefault(q, [])
        log.append(delta(len(log) + 1, [("acme", "spring", hour, m)]))

    def feed(store: RollupStore, order: list[tuple[int, int]]) -> None:
        for q, i in order:
            store.fold(q).feed(per_partition[q][i], i + 1)

    in_order = [(q, i) for q, log in sorted(per_partition.items()) for i in range(len(log))]
    shuffled = in_order[:]
    rnd.shuffle(shuffled)
    shuffled.sort(key=lambda item: item[1])  # each partition stays in its own order
    a, b = RollupStore(), RollupStore()
    for store in (a, b):
        for q in per_partition:
            store.fold(q).feed(Claim("s"), 0)
    feed(a, in_order)
    # b loads partition 0 from a checkpoint of its first `cut` records' buckets.
    log0 = per_partition.get(0, [])
    upto = min(cut, len(log0))
    partial = RollupStore()
    partial.fold(0).feed(Claim("s"), 0)
    feed(partial, [(0, i) for i in range(upto)])
    b.load(0, body(0, [(t, c, h, msgspec.structs.replace(m, usage=dict(m.usage)))
                       for (t, c, h), m in partial.partitions[0].buckets.items()]))
    b.fold(0).owner, b.fold(0).seq = "s", upto
    feed(b, [(q, i) for q, i in shuffled if q != 0 or i >= upto])
    for frm, to in ((0, 48), (0, 24), (5, 30), (24, 48), (7, 8)):
        assert msgspec.to_builtins(a.total("acme", ALL, frm, to)) == msgspec.to_builtins(
            b.total("acme", ALL, frm, to))
        assert msgspec.to_builtins(a.total("acme", "spring", frm, to)) == msgspec.to_builtins(
            b.total("acme", "spring", frm, to))
