"""The worker's per-partition logic against the brute-force oracle, and under crashes.

Events go to the partition of their id digest and counted funnel steps on to the
partition of their journey (`rollups.local`); whatever the partitioning, crashes,
redeliveries and checkpoints, the journal folds to the oracle's numbers.
"""

from __future__ import annotations

import random
from itertools import pairwise

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups import checkpoint, report
from pulse.rollups.dedup import MemoryRuns, SeenSet
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.journal import Claim, JournalFold
from pulse.rollups.local import Entry, LocalPartitions, event_batch
from pulse.rollups.partition import EventBatch, KeyedMessage, PartitionState, RollupSpec
from pulse.rollups.store import ALL, RollupStore
from tests import oracle
from tests.strategies import BASE_US, HOUR, STEPS, TENANTS, streams

PARTITIONS = 3
SPEC = RollupSpec(FunnelSpec(STEPS), 30.0, 10_000 * 24, PARTITIONS)


def entries_of(stream, sources: list[int]) -> list[Entry]:
    """(source partition, offset, event) in arrival order, offsets counting per partition."""
    next_offset: dict[int, int] = {}
    out: list[Entry] = []
    for event, p in zip(stream, sources, strict=True):
        offset = next_offset.get(p, 0)
        next_offset[p] = offset + 1
        out.append((p, offset, event))
    return out


def polls(entries: list[Entry], cuts: list[int]) -> list[list[Entry]]:
    bounds = sorted({0, len(entries), *(c % (len(entries) + 1) for c in cuts)})
    return [list(entries[a:b]) for a, b in pairwise(bounds)]


@st.composite
def scenarios(draw, spread_hours=72):
    stream = draw(streams(spread_hours=spread_hours))
    sources = draw(st.lists(st.integers(0, 2), min_size=len(stream), max_size=len(stream)))
    cuts = draw(st.lists(st.integers(0, 200), max_size=6))
    return stream, polls(entries_of(stream, sources), cuts)


def aligned_range(draw_a: int, draw_b: int) -> tuple[int, int]:
    a, b = sorted((draw_a, draw_b))
    return BASE_US + a * HOUR, BASE_US + (b + 1) * HOUR


def local_run(spec: RollupSpec, source_polls: list[list[Entry]]) -> LocalPartitions:
    local = LocalPartitions(spec)
    for poll in source_polls:
        local.send(poll)
    return local


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(-80, 80), st.integers(-80, 80))
def test_rollups_equal_the_oracle_on_aligned_ranges(scenario, a, b):
    stream, source_polls = scenario
    store = local_run(SPEC, source_polls).store()
    frm, to = aligned_range(a, b)
    h0, h1 = frm // HOUR, to // HOUR
    for tenant in TENANTS:
        for campaign in ("spring", "winter"):
            got = report.overview(store.total(tenant, campaign, h0, h1), STEPS)
            want = oracle.campaign_overview(stream, tenant, campaign, frm, to, STEPS, 30.0)
            assert oracle.approx_equal(got, want), (tenant, campaign)
        everything = store.total(tenant, ALL, h0, h1)
        assert msgspec.to_builtins(report.intent_list(everything)) == oracle.intents_report(
            stream, tenant, None, False, frm, to)["intents"]
        assert msgspec.to_builtins(report.funnel(everything, STEPS)) == oracle.funnel_report(
            stream, tenant, None, False, frm, to, STEPS)
        assert oracle.approx_equal(report.usage(everything),
                                   oracle.usage_report(stream, tenant, frm, to))
        got_campaigns = sorted(
            (c, m.conversations) for c, m in store.campaigns(tenant, h0, h1).items())
        assert got_campaigns == [
            (c["campaign_id"], c["conversations"])
            for c in oracle.campaigns_report(stream, tenant, frm, to)
        ]


class Cluster:
    """Keyed topics, journals and one worker's partitions that can crash at any point."""

    def __init__(self, spec: RollupSpec) -> None:
        self.spec = spec
        self.keyed: dict[int, list[KeyedMessage]] = {q: [] for q in range(spec.partitions)}
        self.journal: dict[int, list] = {q: [] for q in range(spec.partitions)}
        self.position = dict.fromkeys(range(spec.partitions), 0)
        self.owned: dict[int, tuple[PartitionState, str]] = {}
        self.runs = {q: MemoryRuns() for q in range(spec.partitions)}
        self.checkpoints: dict[int, bytes] = {}
        self.lake: dict[str, object] = {}
        """The runs checkpoints named, as the lake's store keeps them."""
        self._sessions = 0

    def forward(self, local: LocalPartitions, poll: list[Entry]) -> None:
        """The ingest stage forwards a poll (again, after its own crash, if so told)."""
        for q, batch in local.route(poll).items():
            self.keyed[q].append(batch)

    def state(self, q: int) -> tuple[PartitionState, str]:
        if q not in self.owned:
            self._sessions += 1
            session = f"s{self._sessions}"
            self.journal[q].append(Claim(session))
            self.runs[q] = MemoryRuns()  # the local disk may be lost too
            state = PartitionState(self.spec, q, SeenSet(self.runs[q], spill=8))
            fold, first = JournalFold(state), 0
            if q in self.checkpoints:  # the newest checkpoint, then the journal after it
                body = checkpoint.decode(self.checkpoints[q], self.spec.definitions(), q)
                for ref in body.runs:
                    self.runs[q].adopt(ref.run(), self.lake[ref.name])
                state.load(body)
                fold, first = JournalFold(state, body.session, body.seq), body.offset + 1
            for offset in range(first, len(self.journal[q])):
                fold.feed(self.journal[q][offset], offset)
            self.owned[q] = (state, session)
        return self.owned[q]

    def step(self, q: int, crash_before_journal: bool = False) -> None:
        state, session = self.state(q)
        offset = self.position[q]
        outcome = state.process(self.keyed[q][offset], offset, session)
        for j, steps in outcome.forwards.items():  # step 2: the steps, before the delta
            self.keyed[j].append(steps)
        if crash_before_journal:
            self.crash(q, back=0)
            return
        if outcome.delta is not None:
            self.journal[q].append(outcome.delta)
        self.position[q] += 1

    def checkpoint(self, q: int) -> None:
        state, session = self.state(q)
        last = len(self.journal[q]) - 1
        record = self.journal[q][last]
        seq = -1 if isinstance(record, Claim) else record.seq
        body = state.body("e", last, session, seq, 0)
        for ref in body.runs:
            self.lake[ref.name] = self.runs[q].read(ref.run())
        self.checkpoints[q] = checkpoint.encode(body)

    def crash(self, q: int, back: int) -> None:
        """kill -9: memory gone, journal kept; Faust redelivers from an earlier commit."""
        self.owned.pop(q, None)
        self.position[q] = max(0, self.position[q] - back)

    def pending(self) -> list[int]:
        return [q for q in self.keyed if self.position[q] < len(self.keyed[q])]

    def store(self) -> RollupStore:
        store = RollupStore()
        for q, records in self.journal.items():
            fold = store.fold(q)
            for offset, record in enumerate(records):
                fold.feed(record, offset)
        return store


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 2**32))
def test_crashes_redeliveries_and_checkpoints_change_nothing(scenario, seed):
    """Kill any partition after any message (or between its steps and its delta), recover
    it from its newest checkpoint and the journal, redeliver from an earlier offset, let
    the ingest stage forward a poll twice: the journal folds to what an uninterrupted run
    builds."""
    _, source_polls = scenario
    rnd = random.Random(seed)
    reference = local_run(SPEC, source_polls)
    cluster = Cluster(SPEC)
    router = LocalPartitions(SPEC)
    for poll in source_polls:
        cluster.forward(router, poll)
        if rnd.random() < 0.3:
            cluster.forward(router, poll)
    while pending := cluster.pending():
        q = rnd.choice(pending)
        roll = rnd.random()
        if roll < 0.08:
            cluster.crash(q, back=rnd.randint(0, 4))
        elif roll < 0.12:
            cluster.step(q, crash_before_journal=True)
        elif roll < 0.2:
            cluster.checkpoint(q)
        else:
            cluster.step(q)
    for q in range(PARTITIONS):
        assert_same_state(cluster.state(q)[0], reference.states[q])
    assert_same_rollups(cluster.store(), reference.store())


def assert_same_state(a: PartitionState, b: PartitionState) -> None:
    assert a.applied == b.applied
    assert a.counters == b.counters
    assert a.journeys == b.journeys
    assert a.watermark_us == b.watermark_us
    assert a.horizon_hour == b.horizon_hour
    assert a.buckets == b.buckets
    assert len(a.seen) == len(b.seen)


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
    stream, source_polls = scenario
    spec = RollupSpec(FunnelSpec(STEPS), 30.0, 48, PARTITIONS)
    local = local_run(spec, source_polls)
    store = local.store()
    horizon = store.horizon_hour()
    frm, to = aligned_range(a, b)
    frm = max(frm, horizon * HOUR)
    if frm < to:
        h0, h1 = frm // HOUR, to // HOUR
        for tenant in TENANTS:
            assert oracle.approx_equal(
                report.overview(store.total(tenant, "spring", h0, h1), STEPS),
                oracle.campaign_overview(stream, tenant, "spring", frm, to, STEPS, 30.0),
            )
            assert msgspec.to_builtins(report.funnel(store.total(tenant, ALL, h0, h1), STEPS)) == \
                oracle.funnel_report(stream, tenant, None, False, frm, to, STEPS)
    c = sum((s.counters for s in local.states.values()), start=type(local.states[0].counters)())
    assert c["read"] == len(stream)
    assert c["read"] == c["accepted"] + c["duplicates"] + c["dead_letters"]


def test_dead_letters_and_replays_are_counted_once():
    state = PartitionState(SPEC, 0, SeenSet(MemoryRuns()))
    batch = event_batch([], [(0, 0, "invalid_json"), (0, 1, "missing_field"),
                             (1, 0, "too_large")], {0: 5, 1: 7})
    first = state.process(batch, 0, "s1").delta
    again = state.process(batch, 1, "s1").delta  # forwarded twice by a restarted ingest
    assert first is not None and first.counters == {
        "read": 3, "dead_letters": 3, "dead_letter:invalid_json": 1,
        "dead_letter:missing_field": 1, "dead_letter:too_large": 1,
    }
    assert first.progress == {0: 5, 1: 7}
    assert again is not None and again.counters == {} and again.keyed_next == 2
    assert state.process(batch, 1, "s1").delta is None  # a keyed message seen before


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_a_batch_an_older_worker_forwarded_counts_as_its_columns_do(scenario):
    """Messages an older worker left in the keyed topic (`EventBatch`, one record per
    event) are processed to exactly the delta of the same events as columns."""
    _, source_polls = scenario
    columns, records = (PartitionState(SPEC, 0, SeenSet(MemoryRuns())) for _ in range(2))
    for offset, poll in enumerate(source_polls):
        rows = [(p, o, e) for p, o, e in poll if not isinstance(e, str)]
        batch = event_batch(rows, [])
        old = EventBatch(batch.sources, batch.offsets, batch.digests, batch.contents,
                         [e for _, _, e in rows], [], {}, {})
        decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=KeyedMessage)
        a = columns.process(batch, offset, "s")
        b = records.process(decoded, offset, "s")
        assert msgspec.to_builtins(a.delta) == msgspec.to_builtins(b.delta)
        assert msgspec.to_builtins(a.forwards) == msgspec.to_builtins(b.forwards)


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_steps_merged_per_destination_count_as_the_batches_do(scenario):
    """The agent sends each partition one `JourneySteps` per group of messages rather than
    a `StepBatch` per message: the journeys and the funnel come out the same."""
    _, source_polls = scenario
    one_by_one, merged = LocalPartitions(SPEC), LocalPartitions(SPEC)
    for poll in source_polls:
        one_by_one.send(poll)
        merged.send_grouped(poll)
    for q in range(PARTITIONS):
        assert one_by_one.states[q].journeys == merged.states[q].journeys
        assert one_by_one.states[q].upstream == merged.states[q].upstream
    a, b = one_by_one.store(), merged.store()
    for tenant in TENANTS:
        assert msgspec.to_builtins(report.funnel(a.total(tenant, ALL, -(1 << 40), 1 << 40),
                                                 STEPS)) == msgspec.to_builtins(
            report.funnel(b.total(tenant, ALL, -(1 << 40), 1 << 40), STEPS))
