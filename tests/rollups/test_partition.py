"""The worker's per-partition logic against the brute-force oracle, and under replays."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups import report
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.journal import Claim, JournalFold
from pulse.rollups.partition import PartitionState, RollupSpec, SourceBatch
from pulse.rollups.store import ALL, RollupStore
from tests import oracle
from tests.strategies import BASE_US, HOUR, STEPS, TENANTS, streams

SPEC = RollupSpec(FunnelSpec(STEPS), engaged_seconds=30.0, retention_hours=10_000 * 24)


def forwarded(stream, sources: list[int]) -> list[tuple[int, int, object]]:
    """(source partition, offset, event) in arrival order, offsets counting per partition."""
    next_offset: dict[int, int] = {}
    entries = []
    for event, p in zip(stream, sources, strict=True):
        offset = next_offset.get(p, 0)
        next_offset[p] = offset + 1
        entries.append((p, offset, event))
    return entries


def batches(entries, cuts: list[int]) -> list[SourceBatch]:
    bounds = sorted({0, len(entries), *(c % (len(entries) + 1) for c in cuts)})
    return [SourceBatch(list(entries[a:b]), {}, {}) for a, b in pairwise(bounds)]


def fold(records: list) -> RollupStore:
    """A reader's rollups from a journal; a bare list of deltas gets session s1's claim."""
    store = RollupStore()
    journal = store.fold(0)
    if records and not isinstance(records[0], Claim):
        journal.feed(Claim("s1"))
    for record in records:
        journal.feed(record)
    return store


@st.composite
def scenarios(draw, spread_hours=72):
    stream = draw(streams(spread_hours=spread_hours))
    sources = draw(st.lists(st.integers(0, 2), min_size=len(stream), max_size=len(stream)))
    cuts = draw(st.lists(st.integers(0, 200), max_size=6))
    return stream, batches(forwarded(stream, sources), cuts)


def aligned_range(draw_a: int, draw_b: int) -> tuple[int, int]:
    a, b = sorted((draw_a, draw_b))
    return BASE_US + a * HOUR, BASE_US + (b + 1) * HOUR


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(-80, 80), st.integers(-80, 80))
def test_rollups_equal_the_oracle_on_aligned_ranges(scenario, a, b):
    stream, source_batches = scenario
    state = PartitionState(SPEC)
    deltas = [d for batch in source_batches if (d := state.process(batch, "s1"))]
    store = fold(deltas)
    frm, to = aligned_range(a, b)
    h0, h1 = frm // HOUR, to // HOUR
    for tenant in TENANTS:
        for campaign in ("spring", "winter"):
            got = report.overview(store.total(tenant, campaign, h0, h1), STEPS)
            want = oracle.campaign_overview(stream, tenant, campaign, frm, to, STEPS, 30.0)
            assert oracle.approx_equal(got, want), (tenant, campaign)
        everything = store.total(tenant, ALL, h0, h1)
        assert report.intent_list(everything) == oracle.intents_report(
            stream, tenant, None, False, frm, to)["intents"]
        assert report.funnel(everything, STEPS) == oracle.funnel_report(
            stream, tenant, None, False, frm, to, STEPS)
        assert oracle.approx_equal(report.usage(everything),
                                   oracle.usage_report(stream, tenant, frm, to))
        got_campaigns = sorted(
            (c, m.conversations) for c, m in store.campaigns(tenant, h0, h1).items())
        assert got_campaigns == [
            (c["campaign_id"], c["conversations"])
            for c in oracle.campaigns_report(stream, tenant, frm, to)
        ]


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=4))
def test_crash_and_redelivery_change_nothing(scenario, crashes):
    """Kill the worker after any batch, recover from the journal, redeliver from any
    earlier batch: the journal folds to the same state as an uninterrupted run."""
    stream, source_batches = scenario
    reference = PartitionState(SPEC)
    reference_deltas = [d for b in source_batches if (d := reference.process(b, "s1"))]

    journal: list = [Claim("s1")]
    state = PartitionState(SPEC)
    session = "s1"
    position = 0
    plan = list(crashes)
    while position < len(source_batches):
        delta = state.process(source_batches[position], session)
        if delta:
            journal.append(delta)
        position += 1
        if plan and plan[0][0] % (len(source_batches) + 1) == position:
            _, back = plan.pop(0)
            # kill -9: memory gone, journal kept; the next owner claims and folds it.
            session = f"s{len(journal)}"
            journal.append(Claim(session))
            state = PartitionState(SPEC)
            recovery = JournalFold(state)
            for record in journal:
                recovery.feed(record)
            position = max(0, position - back)  # offsets committed earlier than processed

    assert_same_state(state, reference)
    assert_same_rollups(fold(journal), fold(reference_deltas))


def assert_same_state(a: PartitionState, b: PartitionState) -> None:
    assert a.applied == b.applied
    assert a.counters == b.counters
    assert a.journeys == b.journeys
    assert a.watermark_us == b.watermark_us
    assert a.horizon_hour == b.horizon_hour
    assert sorted(a.seen.to_bytes()[i:i + 24] for i in range(0, len(a.seen.to_bytes()), 24)) \
        == sorted(b.seen.to_bytes()[i:i + 24] for i in range(0, len(b.seen.to_bytes()), 24))


def assert_same_rollups(a: RollupStore, b: RollupStore) -> None:
    lo, hi = BASE_US // HOUR - 200, BASE_US // HOUR + 200
    for tenant in TENANTS:
        for campaign in (ALL, None, "spring", "winter"):
            assert oracle.approx_equal(
                report.overview(a.total(tenant, campaign, lo, hi), STEPS),
                report.overview(b.total(tenant, campaign, lo, hi), STEPS),
            )


@settings(max_examples=100, deadline=None)
@given(scenarios(spread_hours=200), st.integers(-10, 230), st.integers(-10, 230))
def test_small_retention_still_exact_inside_it(scenario, a, b):
    """With 48 h of retention, every aligned range inside it equals the oracle, and the
    status accounting adds up: read = accepted + duplicates + dead letters."""
    stream, source_batches = scenario
    spec = RollupSpec(FunnelSpec(STEPS), 30.0, retention_hours=48)
    state = PartitionState(spec)
    deltas = [d for batch in source_batches if (d := state.process(batch, "s1"))]
    store = fold(deltas)
    horizon = store.partitions[0].horizon_hour
    frm, to = aligned_range(a, b)
    frm = max(frm, horizon * HOUR)
    if frm >= to:
        return
    h0, h1 = frm // HOUR, to // HOUR
    for tenant in TENANTS:
        assert oracle.approx_equal(
            report.overview(store.total(tenant, "spring", h0, h1), STEPS),
            oracle.campaign_overview(stream, tenant, "spring", frm, to, STEPS, 30.0),
        )
        assert report.funnel(store.total(tenant, ALL, h0, h1), STEPS) == oracle.funnel_report(
            stream, tenant, None, False, frm, to, STEPS)
    c = state.counters
    assert c["read"] == len(stream)
    assert c["read"] == c["accepted"] + c["duplicates"] + c["dead_letters"]


def test_dead_letters_and_replays_are_counted_once():
    state = PartitionState(SPEC)
    batch = SourceBatch([(0, 0, "invalid_json"), (0, 1, "missing_field"), (1, 0, "too_large")],
                        {0: 5, 1: 7}, {})
    first = state.process(batch, "s1")
    again = state.process(batch, "s1")
    assert first is not None and first.counters == {
        "read": 3, "dead_letters": 3, "dead_letter:invalid_json": 1,
        "dead_letter:missing_field": 1, "dead_letter:too_large": 1,
    }
    assert first.progress == {0: 5, 1: 7}
    assert again is None
