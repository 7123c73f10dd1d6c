"""The seen-set: exact membership across its recent dict, its runs, merges and expiry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups.dedup import SeenSet, id_digest, pack_entries


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeenSet, "RECENT_LIMIT", 5)


def contains(seen: SeenSet, digest: bytes) -> int | None:
    halves = np.frombuffer(digest, "<u8").reshape(-1, 2)
    found, stored = seen.lookup_runs(halves[:, 0], halves[:, 1])
    return stored[0] if found[0] else seen.recent(digest)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=80))
def test_membership_survives_settling_and_merging(ops):
    SeenSet.RECENT_LIMIT, original = 4, SeenSet.RECENT_LIMIT
    try:
        seen, model = SeenSet(), {}
        for n, day in ops:
            digest = id_digest("t", f"id-{n}")
            if digest not in model:
                seen.add_recent(digest, n, day)
                model[digest] = (n, day)
                seen.settle()
            assert contains(seen, digest) == n
        assert len(seen) == len(model)
        seen.expire(3)
        for digest, (n, day) in model.items():
            assert contains(seen, digest) == (n if day >= 3 else None)
        restored = SeenSet.from_bytes(seen.to_bytes())
        assert sorted(restored.to_bytes()[i:i + 24] for i in range(0, len(seen) * 24, 24)) == \
            sorted(seen.to_bytes()[i:i + 24] for i in range(0, len(seen) * 24, 24))
    finally:
        SeenSet.RECENT_LIMIT = original


def test_digests_sharing_their_high_half_are_told_apart(small: None):
    a = b"\x01" * 8 + b"\x02" * 8
    b = b"\x01" * 8 + b"\x03" * 8
    c = b"\x01" * 8 + b"\x04" * 8
    seen = SeenSet()
    seen.add(pack_entries([a, b], [10, 11], [0, 0]))
    assert contains(seen, a) == 10 and contains(seen, b) == 11 and contains(seen, c) is None


def test_tenant_and_id_are_separated_unambiguously():
    assert id_digest("ab", "c") != id_digest("a", "bc")
    assert id_digest("t", "x") == id_digest("t", "x")
