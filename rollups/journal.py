"""The rollup journal: the one log the worker writes and every reader folds.

Each batch the worker's rollup agent processes becomes exactly one `Delta` record in
the journal partition of its keyed partition. A record is atomic, and it carries both
the effects of the batch (bucket increments, new dedup digests, journeys) and how far
each source partition has been applied. So a crash can never leave half a batch
counted: the batch is in the journal or it is not, and replaying it is recognised by
its source offsets.

A worker starts owning a partition by appending a `Claim` and folding every record
before it. Readers follow the same rule: a `Delta` counts only if its writer made the
latest claim, so a stalled ex-owner that wakes up and writes cannot double count.
`ResetPart` records carry a whole `Snapshot` (written by `pulse replay` or a rebuild
from the lake), split to stay below Kafka's message size limit.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from .metrics import Measures

BucketKey = tuple[str, str | None, int]
"""(tenant_id, campaign_id or None, hour since the epoch)."""


class LakeMark(msgspec.Struct, array_like=True, frozen=True):
    """How far the lake holds one source partition: complete up to `as_of_us`."""

    as_of_us: int
    flushed_at_us: int
    failures: int = 0
    """Failed lake writes of this partition's current writer (they are retried)."""
    error: str | None = None
    """The last write error, while writes are failing; None once one succeeds."""


class Claim(msgspec.Struct, tag="claim", array_like=True, frozen=True):
    session: str


class Delta(msgspec.Struct, tag="delta", array_like=True, gc=False):
    session: str
    seq: int
    """Counts the session's deltas in its partition, so a record that a producer retry
    wrote twice is folded once (no idempotent producers on the embedded broker)."""
    applied: dict[int, int]
    """Source partition -> highest source offset now applied (only those that moved)."""
    counters: dict[str, int]
    buckets: list[tuple[str, str | None, int, Measures]]
    seen: bytes
    """New dedup entries, `rollups.dedup` layout."""
    journeys: list[tuple[str, str | None, str, int]]
    """(tenant, campaign, customer, packed journey) after this batch."""
    watermark_us: int | None
    horizon_hour: int | None
    """Buckets before this hour are outside retention from now on."""
    progress: dict[int, int]
    """Source partition -> time up to which it is in the rollups (µs)."""
    lake: dict[int, LakeMark]


class ResetPart(msgspec.Struct, tag="reset", array_like=True, frozen=True):
    session: str
    part: int
    parts: int
    payload: bytes


class Snapshot(msgspec.Struct, array_like=True, gc=False):
    """The whole state of one keyed partition, with absolute bucket values."""

    applied: dict[int, int]
    counters: dict[str, int]
    buckets: list[tuple[str, str | None, int, Measures]]
    seen: bytes
    journeys: list[tuple[str, str | None, str, int]]
    watermark_us: int | None
    horizon_hour: int | None
    progress: dict[int, int]
    lake: dict[int, LakeMark]


Record = Claim | Delta | ResetPart

RESET_PART_BYTES = 512 * 1024

_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode(record: Record) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes) -> Record:
    return _record_decoder.decode(data)


def reset_records(session: str, snapshot: Snapshot) -> list[Record]:
    """A claim followed by the snapshot in parts small enough for one Kafka message."""
    payload = _encoder.encode(snapshot)
    chunks = [
        payload[i : i + RESET_PART_BYTES] for i in range(0, len(payload), RESET_PART_BYTES)
    ] or [b""]
    return [Claim(session)] + [
        ResetPart(session, i, len(chunks), chunk) for i, chunk in enumerate(chunks)
    ]


class Target(Protocol):
    def apply_delta(self, delta: Delta) -> None: ...

    def load_snapshot(self, snapshot: Snapshot) -> None: ...


class JournalFold:
    """Feeds one journal partition's records, in order, into a `Target`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.owner: str | None = None
        self._seq = -1
        self._parts: list[bytes] = []

    def feed(self, record: Record) -> None:
        if isinstance(record, Claim):
            if record.session != self.owner:
                self.owner, self._seq, self._parts = record.session, -1, []
        elif record.session != self.owner:
            return  # written by a session that no longer owns the partition
        elif isinstance(record, Delta):
            if record.seq > self._seq:  # else a producer retry wrote it twice
                self._seq = record.seq
                self.target.apply_delta(record)
        else:
            if record.part < len(self._parts):
                return  # a part written twice
            if record.part != len(self._parts):
                self._parts = []
                if record.part != 0:
                    return
            self._parts.append(record.payload)
            if len(self._parts) == record.parts:
                payload, self._parts = b"".join(self._parts), []
                self.target.load_snapshot(_snapshot_decoder.decode(payload))
