"""A keyed partition's whole state at one journal offset, as one self-checking file.

A worker writes its partition's state periodically into the lake's store (see
`streams.checkpoints`); a worker that claims the partition, or an API process that
starts, loads the newest one that is whole and compatible and folds only the journal
after it, so recovery costs what happened since the last checkpoint, not all of history.

The file is `MAGIC`, then the length and crc32 of the body, then the body (msgpack). A
file that is truncated, corrupt, of a newer format or written under other definitions
(funnel steps, engaged seconds, retention, partition count) is refused with a reason,
never half-loaded. Dedup digests are not in the body: it names the runs that hold them
(written beside it), which later checkpoints share.

Which checkpoints may be used is decided here too (`usable`), with the journal facts the
caller reads passed in: pure, like the rest of `rollups`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgspec

from .dedup import Run
from .journal import LakeMark
from .metrics import Measures

MAGIC = b"PULSECK\x01"
FORMAT = 2
"""Bumped when the body changes incompatibly, or when an older body still decodes but
means less than a current one; a newer one is refused, never misread, and an older one
is not used (`usable`), so the partition is rebuilt from the lake."""
OLDER_FORMATS = {
    1: "its measures do not split the chats' duration and engagement from the calls' "
       "(they would read as 0, and a breakdown by channel would count chats as calls)",
}
"""Why each earlier format cannot seed the rollups, for the log."""
_HEADER = struct.Struct("<8sQI")


class Definitions(msgspec.Struct, array_like=True, frozen=True):
    """What the numbers in a checkpoint depend on (changing any needs `pulse replay`)."""

    funnel_steps: tuple[str, ...]
    engaged_seconds: float
    retention_hours: int
    partitions: int


class RunRef(msgspec.Struct, array_like=True, frozen=True):
    day: int
    name: str
    count: int
    crc: int

    def run(self) -> Run:
        return Run(self.day, self.name, self.count, self.crc)

    @classmethod
    def of(cls, run: Run) -> RunRef:
        return cls(run.day, run.name, run.count, run.crc)


class Body(msgspec.Struct, array_like=True, gc=False):
    """The state of keyed partition `partition` after journal record `offset`."""

    format: int
    partition: int
    definitions: Definitions
    epoch: str
    offset: int
    """The journal offset of the last record this state includes."""
    session: str
    """The owner at `offset` (its claim and every record since were its own)."""
    seq: int
    written_at_us: int
    applied: dict[int, int]
    counters: dict[str, int]
    watermark_us: int | None
    horizon_hour: int | None
    progress: dict[int, int]
    upstream: dict[int, int]
    lake: dict[int, LakeMark]
    keyed_next: int
    buckets: list[tuple[str, str | None, int, Measures]]
    journeys: list[tuple[str, str | None, str, bytes]]
    runs: list[RunRef]
    stats: dict[str, float]
    """What the writer last said of itself (`Delta.stats`), for readers starting here."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Body)


class Unusable(Exception):
    """Why a checkpoint file cannot be used (the message is for the log)."""


def encode(body: Body) -> bytes:
    payload = _encoder.encode(body)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes, definitions: Definitions, partition: int) -> Body:
    """The body of a checkpoint file, or `Unusable` saying why not."""
    if len(data) < _HEADER.size:
        raise Unusable(f"truncated: {len(data)} bytes, not even a header")
    magic, length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Unusable("not a Pulse checkpoint (bad magic)")
    payload = memoryview(data)[_HEADER.size:]
    if len(payload) != length:
        raise Unusable(f"truncated: {len(payload)} of {length} body bytes")
    if zlib.crc32(payload) != crc:
        raise Unusable("corrupt: its checksum does not match")
    try:
        body = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        fmt = _format_of(payload)
        if fmt is not None and fmt > FORMAT:
            raise Unusable(f"written by a newer Pulse (format {fmt}, this one reads "
                           f"{FORMAT})") from None
        raise Unusable(f"unreadable body: {exc}") from None
    if body.format > FORMAT:
        raise Unusable(f"written by a newer Pulse (format {body.format}, this one reads "
                       f"{FORMAT})")
    if body.partition != partition:
        raise Unusable(f"of keyed partition {body.partition}, not {partition}")
    if body.definitions != definitions:
        changed = _differences(body.definitions, definitions)
        raise Unusable(f"written under other definitions ({changed}); `pulse replay` "
                       "rebuilds the rollups under the current ones")
    return body


def _format_of(payload: memoryview) -> int | None:
    try:
        head = msgspec.msgpack.decode(payload, type=list)
    except msgspec.DecodeError:
        return None
    return head[0] if head and isinstance(head[0], int) else None


def _differences(have: Definitions, want: Definitions) -> str:
    names = {"funnel_steps": "PULSE_FUNNEL_STEPS", "engaged_seconds": "PULSE_ENGAGED_SECONDS",
             "retention_hours": "PULSE_RETENTION_DAYS", "partitions": "PULSE_PARTITIONS"}
    return ", ".join(f"{env} {getattr(have, name)!r} now {getattr(want, name)!r}"
                     for name, env in names.items() if getattr(have, name) != getattr(want, name))


@dataclass(frozen=True)
class JournalFacts:
    """What the journal says about a checkpoint stamped `offset` (read by the caller)."""

    log_start: int
    """The journal partition's first offset still held."""
    record_at: tuple[str, int] | None
    """(session, seq) of the record at the checkpoint's offset, if still held; a claim
    is (session, -1)."""


def usable(body: Body, facts: JournalFacts, claimed_at: int | None) -> str | None:
    """Why `body` cannot seed a fold of this journal (None: it can).

    The journal must still hold every record after it, and the record it was stamped
    with must be the one there (else the journal was recreated under it); a worker that
    just claimed at `claimed_at` may only start from before its claim. An older format
    decodes, but is refused here rather than by `decode`, so that a worker knows a
    checkpoint was there and rebuilds the partition from the lake instead of folding a
    journal that older workers wrote (journal records carry no format: their new fields
    read as defaults, which is only right from a current checkpoint on).
    """
    if body.format < FORMAT:
        why = OLDER_FORMATS.get(body.format, "its layout is an earlier one")
        return (f"written by an older Pulse (format {body.format}, this one writes "
                f"{FORMAT}): {why}; the partition is rebuilt from the lake")
    if claimed_at is not None and body.offset >= claimed_at:
        return f"stamped {body.offset}, at or after this worker's claim at {claimed_at}"
    if facts.log_start > body.offset + 1:
        return (f"the journal no longer holds what follows it (it starts at offset "
                f"{facts.log_start}, the checkpoint is at {body.offset}; workers were "
                "stopped longer than PULSE_JOURNAL_RETENTION_HOURS)")
    if facts.log_start <= body.offset and facts.record_at != (body.session, body.seq):
        return (f"the journal's record at offset {body.offset} is not the one it was "
                "stamped with (the journal topic was recreated)")
    return None


# ---- where checkpoints live in the lake's store ----------------------------------------

ROOT = "_pulse/checkpoints"
_SUFFIX = ".ckpt"


def partition_dir(epoch: str, partition: int) -> str:
    """The folder of one keyed partition's checkpoints (and `runs/` of digests) in the
    lake. Per epoch: journal offsets of another Kafka log mean nothing here."""
    return f"{ROOT}/{epoch}/p{partition:04d}"


def runs_dir(epoch: str, partition: int) -> str:
    return f"{partition_dir(epoch, partition)}/runs"


def file_name(offset: int, session: str) -> str:
    return f"{offset:012d}-{session[:12]}{_SUFFIX}"


def offset_of(name: str) -> int | None:
    """The journal offset a checkpoint file name carries (None: not a checkpoint)."""
    stem, dash, _ = name.partition("-")
    if not name.endswith(_SUFFIX) or not dash or not stem.isdigit():
        return None
    return int(stem)


def newest_first(names: list[str]) -> list[tuple[int, str]]:
    """(offset, name) of the checkpoint files among `names`, newest first."""
    found = [(offset, name) for name in names if (offset := offset_of(name)) is not None]
    return sorted(found, reverse=True)
