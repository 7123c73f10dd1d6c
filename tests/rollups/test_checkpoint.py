"""Checkpoint files: whole and compatible, or refused with a reason; and when a journal can
carry a checkpoint on."""

from __future__ import annotations

import zlib

import msgspec
import pytest

from pulse.rollups import checkpoint
from pulse.rollups.checkpoint import Definitions, JournalFacts, Unusable, usable
from pulse.rollups.metrics import Measures
from tests.rollups.test_store import body

DEFINITIONS = Definitions(("a",), 30.0, 48, 2)


def test_a_checkpoint_reads_back_as_written():
    written = body(1, [("acme", "spring", 5, Measures(events=3, calls=2, intents={"buy": 1}))])
    assert checkpoint.decode(checkpoint.encode(written), DEFINITIONS, 1) == written


@pytest.mark.parametrize(("change", "reason"), [
    (lambda data: data[:-5], "truncated"),
    (lambda data: data[:10], "truncated"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "corrupt"),
    (lambda data: b"NOTPULSE" + data[8:], "bad magic"),
])
def test_damaged_files_are_refused_with_a_reason(change, reason):
    data = checkpoint.encode(body(1, []))
    with pytest.raises(Unusable, match=reason):
        checkpoint.decode(change(data), DEFINITIONS, 1)


def test_other_definitions_partitions_and_newer_formats_are_refused():
    data = checkpoint.encode(body(1, []))
    with pytest.raises(Unusable, match="PULSE_ENGAGED_SECONDS 30.0 now 45.0"):
        checkpoint.decode(data, Definitions(("a",), 45.0, 48, 2), 1)
    with pytest.raises(Unusable, match="PULSE_PARTITIONS 2 now 4"):
        checkpoint.decode(data, Definitions(("a",), 30.0, 48, 4), 1)
    with pytest.raises(Unusable, match="of keyed partition 1, not 0"):
        checkpoint.decode(data, DEFINITIONS, 0)
    newer = body(1, [])
    newer.format = checkpoint.FORMAT + 1
    with pytest.raises(Unusable, match="newer Pulse"):
        checkpoint.decode(checkpoint.encode(newer), DEFINITIONS, 1)
    unknown = msgspec.msgpack.encode([checkpoint.FORMAT + 1, "a body this Pulse cannot read"])
    framed = checkpoint.MAGIC + len(unknown).to_bytes(8, "little") + \
        zlib.crc32(unknown).to_bytes(4, "little") + unknown
    with pytest.raises(Unusable, match="newer Pulse"):
        checkpoint.decode(framed, DEFINITIONS, 1)


def test_a_checkpoint_needs_the_journal_after_it_and_its_own_record():
    at_nine = body(1, [])  # stamped offset 9, session r, seq -1
    assert usable(at_nine, JournalFacts(0, ("r", -1)), None) is None
    assert usable(at_nine, JournalFacts(10, None), None) is None  # retention took 0..9
    assert "no longer holds" in usable(at_nine, JournalFacts(11, None), None)
    assert "recreated" in usable(at_nine, JournalFacts(0, ("x", 3)), None)
    assert "recreated" in usable(at_nine, JournalFacts(0, None), None)  # nothing at 9
    assert "claim" in usable(at_nine, JournalFacts(0, ("r", -1)), claimed_at=9)


class MeasuresOfFormat1(msgspec.Struct, array_like=True):
    """`Measures` as format 1 wrote them: without the chats' part of duration and engaged."""

    events: int
    calls: int
    chats: int
    duration_s: float
    engaged: int
    intents: dict[str, int]
    usage: dict[str, float]
    funnel: dict[int, int]


def test_an_older_format_decodes_but_is_not_used_so_the_partition_is_rebuilt():
    chats = MeasuresOfFormat1(2, 0, 2, 95.0, 2, {}, {}, {})
    old = body(1, [("acme", "spring", 5, chats)])  # type: ignore[list-item]
    old.format = 1
    loaded = checkpoint.decode(checkpoint.encode(old), DEFINITIONS, 1)
    measures = loaded.buckets[0][3]
    assert (measures.chats, measures.chat_duration_s, measures.chat_engaged) == (2, 0.0, 0)
    why = usable(loaded, JournalFacts(0, ("r", -1)), None)
    assert why is not None
    assert "older Pulse (format 1" in why and "chats" in why and "rebuilt from the lake" in why
    assert usable(body(1, []), JournalFacts(0, ("r", -1)), None) is None  # the current one


def test_names_order_newest_first():
    names = [checkpoint.file_name(5, "abc"), "junk.txt", checkpoint.file_name(12, "def")]
    assert [offset for offset, _ in checkpoint.newest_first(names)] == [12, 5]
