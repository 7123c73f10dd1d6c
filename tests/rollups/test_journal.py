"""The journal fold: claims fence out earlier owners; resets arrive whole or not at all."""

from __future__ import annotations

from pulse.rollups.journal import (
    Claim,
    Delta,
    JournalFold,
    ResetPart,
    Snapshot,
    decode,
    encode,
    reset_records,
)
from pulse.rollups.metrics import Measures


class Recorder:
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.snapshots: list[Snapshot] = []

    def apply_delta(self, delta: Delta) -> None:
        self.deltas.append(delta.session)

    def load_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)


def delta(session: str, seq: int) -> Delta:
    return Delta(session, seq, {0: 1}, {"read": 1}, [("t", None, 1, Measures(events=1))], b"",
                 [], None, None, {}, {})


def snapshot(n: int) -> Snapshot:
    return Snapshot({0: n}, {"read": n}, [], b"x" * n, [], None, None, {}, {})


def test_only_the_latest_claimant_is_folded():
    target = Recorder()
    fold = JournalFold(target)
    for record in [delta("a", 1), Claim("a"), delta("a", 2), Claim("b"), delta("a", 3),
                   delta("b", 1)]:
        fold.feed(decode(encode(record)))
    assert target.deltas == ["a", "b"]


def test_a_reset_is_loaded_once_every_part_has_arrived():
    target = Recorder()
    fold = JournalFold(target)
    records = reset_records("r", snapshot(3_000_000))
    parts = [r for r in records if isinstance(r, ResetPart)]
    assert len(parts) > 1 and isinstance(records[0], Claim)
    for record in records[:-1]:
        fold.feed(decode(encode(record)))
    assert target.snapshots == []
    fold.feed(decode(encode(records[-1])))
    assert target.snapshots == [snapshot(3_000_000)]


def test_an_interrupted_reset_is_dropped_and_a_later_one_wins():
    target = Recorder()
    fold = JournalFold(target)
    first = reset_records("r1", snapshot(2_000_000))
    for record in first[:2]:  # the writer died after one part
        fold.feed(record)
    for record in reset_records("r2", snapshot(5)):
        fold.feed(record)
    for record in first[2:]:  # a zombie's late parts are ignored
        fold.feed(record)
    assert target.snapshots == [snapshot(5)]


def test_a_record_written_twice_by_a_producer_retry_is_folded_once():
    """Without idempotent producers a lost acknowledgement makes the client send a
    record again; the fold must not count it twice."""
    from pulse.rollups.funnel import FunnelSpec
    from pulse.rollups.partition import PartitionState, RollupSpec, SourceBatch
    from pulse.rollups.store import ALL, RollupStore
    from pulse.schemas.events import Event
    from tests.strategies import BASE_US, HOUR

    spec = RollupSpec(FunnelSpec(("picked_up",)), 30.0, 10_000)
    state = PartitionState(spec)
    sample = [Event(("acme", "globex")[i % 2], f"e{i}", ("call_ended", "funnel_step")[i % 2],
                    BASE_US + i * HOUR // 4, f"c{i % 5}", "spring", "call", None,
                    "picked_up" if i % 2 else None, 45.0 if i % 2 == 0 else None, None, 1)
              for i in range(30)]
    deltas = [state.process(SourceBatch([(0, i, e)], {}, {}), "s") for i, e in enumerate(sample)]
    store, once = RollupStore(), RollupStore()
    for target, records in ((store, [d for d in deltas for _ in (1, 2)]), (once, deltas)):
        fold = target.fold(0)
        fold.feed(Claim("s"))
        for record in records:
            fold.feed(decode(encode(record)))
    h0, h1 = BASE_US // HOUR - 200, BASE_US // HOUR + 200
    for tenant in ("acme", "globex"):
        assert store.total(tenant, ALL, h0, h1) == once.total(tenant, ALL, h0, h1)

    recovered = PartitionState(spec)
    fold = JournalFold(recovered)
    fold.feed(Claim("s"))
    for record in [d for d in deltas for _ in (1, 2)]:
        fold.feed(record)
    assert recovered.counters == state.counters


def test_a_reset_part_written_twice_is_folded_once():
    target = Recorder()
    fold = JournalFold(target)
    records = reset_records("r", snapshot(2_000_000))
    for record in [records[0], records[1], records[1], *records[2:], records[-1]]:
        fold.feed(record)
    assert target.snapshots == [snapshot(2_000_000)]
