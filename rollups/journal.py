"""The rollup journal: the one log the worker writes and every reader folds.

Each keyed message the worker's rollup agent processes becomes at most one `Delta`
record in the journal partition of its keyed partition. A record is atomic, and it
carries both the effects of the message (bucket increments, new dedup digests, journeys)
and how far each source partition has been applied. So a crash can never leave half a
message counted: it is in the journal or it is not, and replaying it is recognised by
its source offsets.

A worker starts owning a partition by appending a `Claim` and folding every record
before it (from the newest checkpoint on, see `rollups.checkpoint`). Readers follow the
same rule: a `Delta` counts only if its writer made the latest claim, so a stalled
ex-owner that wakes up and writes cannot double count. A claim with `reset` set says the
partition's state is, from there on, the checkpoint stamped with that claim's own
offset (written by `pulse replay` or a rebuild from the lake, just after the claim).

`LakeMark`s ride in the journal because the journal is the one thing every API process
already reads: how far the lake holds each input partition is what lake-backed answers
put in their `as_of`, and the ingest stage that knows it has no other way to tell them.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

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
    iceberg_waiting: int = 0
    """Files of this partition in the lake and not yet known to be in the Iceberg tables."""
    iceberg_error: str | None = None
    """The writer's last Iceberg commit error, while commits fail (they delay nothing
    else); None once one succeeds."""


class Claim(msgspec.Struct, tag="claim", array_like=True, frozen=True):
    session: str
    reset: bool = False
    """The state is the checkpoint stamped with this record's offset, not the fold."""


class DeltaHead(msgspec.Struct, tag="delta", array_like=True, gc=False):
    """The first fields of a `Delta`, all a reader that follows only counters (a
    benchmark waiting for its events, a status probe) decodes: the rest of the record
    is skipped by the parser, not built."""

    session: str
    seq: int
    """Counts the session's deltas in its partition, so a record that a producer retry
    wrote twice is folded once (no idempotent producers on the embedded broker)."""
    applied: dict[int, int]
    """Source partition -> highest source offset now applied (only those that moved)."""
    counters: dict[str, int]


class Delta(DeltaHead, tag="delta", array_like=True, gc=False):
    buckets: list[tuple[str, str | None, int, Measures]]
    """Increments of hourly buckets (measures of this partition's events, and the
    default funnel of its journeys)."""
    seen: bytes
    """New dedup digests, `rollups.dedup.JOURNAL_ENTRY` layout."""
    journeys: list[tuple[str, str | None, str, bytes]]
    """(tenant, campaign, customer, journey) after this message (`rollups.funnel`)."""
    watermark_us: int | None
    horizon_hour: int | None
    """Buckets before this hour are outside retention from now on."""
    progress: dict[int, int]
    """Source partition -> time up to which it is in the rollups (µs)."""
    upstream: dict[int, int]
    """Keyed partition -> time up to which its funnel steps are in this one's journeys."""
    lake: dict[int, LakeMark]
    keyed_next: int
    """The keyed-topic offset this partition reads next: a message beyond it means
    messages were lost (retention), and the partition must be rebuilt."""
    stats: dict[str, float]
    """Facts about the writing worker (recovery time, records folded at start, dedup
    bytes in memory and on disk), sent now and then for `/analytics/status`."""


Record = Claim | Delta

_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_head_decoder = msgspec.msgpack.Decoder(Claim | DeltaHead)
_CLAIM_PREFIX = b"\xa5claim"


def encode(record: Record) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes) -> Record:
    return _record_decoder.decode(data)


def decode_head(data: bytes) -> Claim | DeltaHead:
    """A record with a delta's buckets, digests and journeys skipped (`DeltaHead`)."""
    return _head_decoder.decode(data)


def is_claim(data: bytes) -> bool:
    """Whether an encoded record is a claim, without decoding it (a fixarray header,
    then the tag)."""
    return data[1:7] == _CLAIM_PREFIX


def stamp_of(record: Record) -> tuple[str, int]:
    """(session, seq) of a record, as a checkpoint is stamped with it (a claim: seq -1)."""
    if isinstance(record, Claim):
        return record.session, -1
    return record.session, record.seq


D = TypeVar("D", bound=DeltaHead)
D_contra = TypeVar("D_contra", bound=DeltaHead, contravariant=True)


class Target(Protocol[D_contra]):
    def apply_delta(self, delta: D_contra) -> None: ...


class JournalFold(Generic[D]):
    """Feeds one journal partition's records, in order, into a `Target`.

    `feed` returns a reset claim: the caller must then load the checkpoint its writer
    stamped with the claim's offset into the target (only it can read checkpoints).
    """

    def __init__(self, target: Target[D], owner: str | None = None, seq: int = -1) -> None:
        self.target = target
        self.owner = owner
        self.seq = seq

    def feed(self, record: Claim | D, offset: int) -> Claim | None:
        if isinstance(record, Claim):
            if record.session != self.owner or record.reset:
                self.owner, self.seq = record.session, -1
            return record if record.reset else None
        if record.session != self.owner:
            return None  # written by a session that no longer owns the partition
        if record.seq > self.seq:  # else a producer retry wrote it twice
            self.seq = record.seq
            self.target.apply_delta(record)
        return None
