"""The journal fold: claims fence out earlier owners, retries fold once, resets point at
the checkpoint stamped with their own offset."""

from __future__ import annotations

from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.journal import Claim, Delta, JournalFold, decode, encode, is_claim, stamp_of
from pulse.rollups.local import LocalPartitions
from pulse.rollups.metrics import Measures
from pulse.rollups.partition import RollupSpec
from pulse.rollups.store import ALL
from pulse.schemas.events import Event
from tests.strategies import BASE_US, HOUR


class Recorder:
    def __init__(self) -> None:
        self.deltas: list[tuple[str, int]] = []

    def apply_delta(self, delta: Delta) -> None:
        self.deltas.append((delta.session, delta.seq))


def delta(session: str, seq: int) -> Delta:
    return Delta(session, seq, {0: 1}, {"read": 1}, [("t", None, 1, Measures(events=1))], b"",
                 [], None, None, {}, {}, {}, 0, {})


def feed(fold: JournalFold, records: list) -> list[int]:
    """Feed encoded and decoded records; the offsets of the resets they announce."""
    resets = []
    for offset, record in enumerate(records):
        reset = fold.feed(decode(encode(record)), offset)
        if reset is not None:
            resets.append(offset)
    return resets


def test_only_the_latest_claimant_is_folded():
    target = Recorder()
    feed(JournalFold(target), [delta("a", 1), Claim("a"), delta("a", 2), Claim("b"),
                               delta("a", 3), delta("b", 1)])
    assert target.deltas == [("a", 2), ("b", 1)]


def test_a_reset_claim_asks_for_its_checkpoint_and_fences_out_everyone_else():
    target = Recorder()
    resets = feed(JournalFold(target), [Claim("a"), delta("a", 1), Claim("r", reset=True),
                                        delta("a", 2), delta("r", 1)])
    assert resets == [2]
    assert target.deltas == [("a", 1), ("r", 1)]


def test_a_fold_can_start_from_a_checkpoints_owner_and_seq():
    target = Recorder()
    fold = JournalFold(target, owner="a", seq=4)
    feed(fold, [delta("a", 4), delta("a", 5), delta("b", 6)])
    assert target.deltas == [("a", 5)]


def test_claims_are_recognised_without_decoding_and_stamped_with_seq_minus_one():
    assert is_claim(encode(Claim("s", reset=True))) and is_claim(encode(Claim("s")))
    assert not is_claim(encode(delta("s", 1)))
    assert stamp_of(Claim("s")) == ("s", -1) and stamp_of(delta("s", 3)) == ("s", 3)


def test_a_record_written_twice_by_a_producer_retry_is_folded_once():
    """Without idempotent producers a lost acknowledgement makes the client send a
    record again; the fold must not count it twice."""
    spec = RollupSpec(FunnelSpec(("picked_up",)), 30.0, 10_000, 2)
    local = LocalPartitions(spec, session="s")
    sample = [Event(("acme", "globex")[i % 2], f"e{i}", ("call_ended", "funnel_step")[i % 2],
                    BASE_US + i * HOUR // 4, f"c{i % 5}", "spring", "call", None,
                    "picked_up" if i % 2 else None, 45.0 if i % 2 == 0 else None, None, 1)
              for i in range(30)]
    for i, event in enumerate(sample):
        local.send([(0, i, event)])
    once = local.store()
    for q, records in local.journals.items():  # every delta written twice
        local.journals[q] = [r for record in records for r in (record, record)]
    twice = local.store()
    h0, h1 = BASE_US // HOUR - 200, BASE_US // HOUR + 200
    for tenant in ("acme", "globex"):
        assert twice.total(tenant, ALL, h0, h1) == once.total(tenant, ALL, h0, h1)
