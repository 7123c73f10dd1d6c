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


def delta(session: str) -> Delta:
    return Delta(session, {0: 1}, {"read": 1}, [("t", None, 1, Measures(events=1))], b"", [],
                 None, None, {}, {})


def snapshot(n: int) -> Snapshot:
    return Snapshot({0: n}, {"read": n}, [], b"x" * n, [], None, None, {}, {})


def test_only_the_latest_claimant_is_folded():
    target = Recorder()
    fold = JournalFold(target)
    for record in [delta("a"), Claim("a"), delta("a"), Claim("b"), delta("a"), delta("b")]:
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
