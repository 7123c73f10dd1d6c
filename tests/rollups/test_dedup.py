"""The seen-set: exact membership across its recent dict, its runs, merges and expiry."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups.dedup import (
    Bloom,
    MemoryRuns,
    SeenSet,
    find_sorted,
    halves,
    id_digest,
    keyed_partition,
    unique_digests,
)


def digests(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return halves(b"".join(id_digest("t", i) for i in ids))


def contains(seen: SeenSet, event_id: str, day: int) -> int | None:
    hi, lo = digests([event_id])
    found, stored = seen.lookup(hi, lo, np.array([day], np.int32))
    return int(stored[0]) if found[0] else None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5)), max_size=120),
       st.integers(0, 6))
def test_membership_survives_spills_merges_expiry_and_restore(ops, expire_at):
    store = MemoryRuns()
    seen, model = SeenSet(store, spill=4, capacity=16), {}
    for n, day in ops:
        event_id = f"id-{n}"
        if event_id in model:
            continue
        hi, lo = digests([event_id])
        seen.add(hi, lo, np.array([n], np.uint32), np.array([day], np.int32))
        model[event_id] = (n, day)
        # Looked up by its own day, and by another (a conflicting copy's other time).
        assert contains(seen, event_id, day) == n
        assert contains(seen, event_id, day + 1) == n
    assert len(seen) == len(model)
    seen.expire(expire_at)
    for event_id, (n, day) in model.items():
        assert contains(seen, event_id, day) == (n if day >= expire_at else None)
    assert contains(seen, "never-added", 0) is None

    seen.flush()
    for saved in (None, seen.filter_bytes(), b"not a filter", seen.filter_bytes()[:-1]):
        restored = SeenSet(store, spill=4)
        restored.restore(seen.runs(), saved)
        for event_id, (n, day) in model.items():
            assert contains(restored, event_id, day) == (n if day >= expire_at else None)


def test_digests_sharing_their_high_half_are_told_apart():
    run_hi = np.array([1, 1, 1, 5], np.uint64)
    run_lo = np.array([2, 3, 9, 0], np.uint64)
    at = find_sorted(run_hi, run_lo, np.array([1, 1, 1, 5], np.uint64),
                     np.array([3, 9, 4, 0], np.uint64))
    assert at.tolist() == [1, 2, -1, 3]


def test_the_filter_has_no_false_negatives_and_few_false_positives():
    rng = np.random.default_rng(7)
    hi = rng.integers(0, 2**63, 50_000, dtype=np.uint64)
    lo = rng.integers(0, 2**63, 50_000, dtype=np.uint64)
    bloom = Bloom(50_000)
    bloom.add(hi[:25_000], lo[:25_000])
    assert bloom.contains(hi[:25_000], lo[:25_000]).all()
    assert bloom.contains(hi[25_000:], lo[25_000:]).mean() < 0.01
    assert bloom.nbytes <= 2 * 50_000 + 64


def test_the_filter_keeps_its_layout_so_filters_saved_earlier_still_load():
    """Parquet's split-block layout, one bit in each 32-bit word of the key's block,
    however the bits are written (saved filters are copied back as bytes)."""
    rng = np.random.default_rng(11)
    hi = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64)
    lo = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64)
    bloom = Bloom(1024)
    bloom.add(hi, lo)
    words = np.zeros(bloom.blocks * 8, np.uint32)
    for high, low in zip(hi.tolist(), lo.tolist(), strict=True):
        block = (high & ((1 << 48) - 1)) % bloom.blocks
        for lane in range(8):
            words[block * 8 + lane] |= 1 << ((low >> (5 * lane)) & 31)
    assert bloom.words.tobytes() == words.astype("<u4").tobytes()
    restored = Bloom.from_bytes(bloom.to_bytes())
    assert restored is not None and restored.contains(hi, lo).all()


def test_tenant_and_id_are_separated_unambiguously():
    assert id_digest("ab", "c") != id_digest("a", "bc")
    assert id_digest("t", "x") == id_digest("t", "x")


def test_keyed_partitions_spread_one_tenant_evenly():
    counts = np.bincount([keyed_partition(id_digest("acme", f"ev-{i}"), 8)
                          for i in range(40_000)], minlength=8)
    assert counts.min() > 0.9 * 5_000 and counts.max() < 1.1 * 5_000


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_unique_digests_is_numpys_unique_of_the_pairs(pairs):
    hi = np.array([p[0] for p in pairs], np.uint64)
    lo = np.array([p[1] for p in pairs], np.uint64)
    keys = np.empty(len(pairs), [("hi", "<u8"), ("lo", "<u8")])
    keys["hi"], keys["lo"] = hi, lo
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    got_first, got_inverse = unique_digests(hi, lo)
    assert got_first.tolist() == first.tolist()
    assert got_inverse.tolist() == inverse.ravel().tolist()
