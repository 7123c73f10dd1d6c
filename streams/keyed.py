"""One poll, routed to the keyed partitions as columns (`rollups.columns.ColumnBatch`).

Each valid event goes to the partition of its (tenant, id) digest, which deduplicates
and counts it; each dead letter of input partition p is counted by keyed partition
p % n. The events of a poll arrive here as the Arrow table the lake is written from
(`schemas.arrow.POLL_SCHEMA`), so routing is a few vectorised takes per keyed
partition, never a loop over events.

A keyed partition may get several messages from one poll (each under Kafka's message
size limit). Every journal record guards on the highest source offset it applied, so
the messages are cut by position in (source partition, offset) order, dead letters
included: of every source, each message holds offsets before the next one's.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pulse.rollups.columns import ColumnBatch, Strings
from pulse.rollups.dedup import keyed_partitions
from pulse.rollups.journal import LakeMark
from pulse.rollups.metrics import EVENT_TYPES

FORWARD_EVENTS = 8_000
"""Events and dead letters per keyed message: about 100 bytes each as columns (800 KB,
below `pulse.kafka.MAX_MESSAGE_BYTES` with room for long strings), and one journal
record covers it. Larger messages cost the rollups less per event (each journal delta
names the hours it touched once): 8,000 rather than 4,000 took their CPU per message
from 5.0 to 4.4 µs in `pulse bench ingest`."""

_KINDS = pa.array(EVENT_TYPES, pa.string())


@dataclass
class _Part:
    """One input partition's share of a poll for one keyed partition."""

    source: int
    rows: pa.Table
    offsets: npt.NDArray[np.int64]
    digests: npt.NDArray[np.void]
    contents: npt.NDArray[np.uint32]


@dataclass
class PollRouter:
    """Collects a poll, input partition by input partition, then cuts the messages."""

    partitions: int
    _events: dict[int, list[_Part]] = field(default_factory=lambda: defaultdict(list))
    _dead: dict[int, list[tuple[int, int, str]]] = field(
        default_factory=lambda: defaultdict(list))

    def add(self, source: int, events: pa.Table, digests: bytes, contents: list[int],
            dead: list[tuple[int, str]]) -> None:
        """An input partition's events (`POLL_SCHEMA`, in offset order) with their id
        and content digests, and its dead letters as (offset, reason)."""
        for offset, reason in dead:
            self._dead[source % self.partitions].append((source, offset, reason))
        if not events.num_rows:
            return
        targets = keyed_partitions(digests, self.partitions)
        # One take into partition order (stable: offsets stay in order), then slices.
        order = np.argsort(targets, kind="stable")
        rows, targets = events.take(order), targets[order]
        ids = np.frombuffer(digests, "V16")[order]
        sums = np.array(contents, np.uint32)[order]
        offsets = events.column("kafka_offset").to_numpy()[order]
        starts = [0, *(np.flatnonzero(targets[1:] != targets[:-1]) + 1).tolist(), len(order)]
        for a, b in itertools.pairwise(starts):
            self._events[int(targets[a])].append(_Part(source, rows.slice(a, b - a),
                                                       offsets[a:b], ids[a:b], sums[a:b]))

    def has(self, q: int) -> bool:
        """Whether the poll holds anything for keyed partition `q`."""
        return bool(self._events.get(q) or self._dead.get(q))

    def messages(self, q: int, progress: dict[int, int],
                 lake: dict[int, LakeMark]) -> list[ColumnBatch]:
        """What partition `q` is sent for this poll: at least one message (it carries
        `progress` and `lake`, on the last message only, as each is its own journal
        record and an earlier one must not claim the later ones)."""
        parts = sorted(self._events.get(q, []), key=lambda part: part.source)
        dead = sorted(self._dead.get(q, []))
        n_events = sum(len(part.offsets) for part in parts)
        sources = np.concatenate([np.full(len(part.offsets), part.source, np.int32)
                                  for part in parts] + [np.array([d[0] for d in dead], np.int32)])
        offsets = np.concatenate([part.offsets for part in parts]
                                 + [np.array([d[1] for d in dead], np.int64)])
        order = np.lexsort((offsets, sources))
        if not len(order):
            return [_batch(None, [], progress, lake)]
        rows = pa.concat_tables([part.rows for part in parts]) if parts else None
        digests = np.concatenate([part.digests for part in parts]) if parts else None
        contents = np.concatenate([part.contents for part in parts]) if parts else None
        out = []
        for start in range(0, len(order), FORWARD_EVENTS):
            piece = order[start:start + FORWARD_EVENTS]
            mine = np.sort(piece[piece < n_events])
            last = start + FORWARD_EVENTS >= len(order)
            taken = None
            if rows is not None and digests is not None and contents is not None and len(mine):
                taken = (rows.take(mine), sources[mine], offsets[mine], digests[mine],
                         contents[mine])
            out.append(_batch(taken, [dead[i - n_events] for i in piece[piece >= n_events]],
                              progress if last else {}, lake if last else {}))
        return out


def _batch(taken: tuple[pa.Table, npt.NDArray[np.int32], npt.NDArray[np.int64],
                        npt.NDArray[np.void], npt.NDArray[np.uint32]] | None,
           dead: list[tuple[int, int, str]], progress: dict[int, int],
           lake: dict[int, LakeMark]) -> ColumnBatch:
    if taken is None:
        return ColumnBatch(b"", b"", b"", b"", b"", b"", b"", b"", *(_NO_STRINGS,) * 5,
                           dead, progress, lake)
    rows, sources, offsets, digests, contents = taken
    column = rows.column
    kinds = pc.index_in(column("event_type"), value_set=_KINDS)
    return ColumnBatch(
        sources=sources.tobytes(), offsets=offsets.tobytes(), digests=digests.tobytes(),
        contents=contents.tobytes(),
        occurred=_numpy(column("occurred_at").cast(pa.int64())).tobytes(),
        values=_numpy(pc.fill_null(column("value"), np.nan)).tobytes(),
        kinds=_numpy(kinds).astype(np.int8).tobytes(),
        chats=_numpy(pc.fill_null(pc.equal(column("channel"), "chat"), False)).tobytes(),
        tenants=_strings(column("tenant_id")), campaigns=_strings(column("campaign_id")),
        labels=_strings(column("label")), categories=_strings(column("category")),
        customers=_strings(column("customer_id")),
        dead=dead, progress=progress, lake=lake)


_NO_STRINGS = Strings([], b"")


def _numpy(values: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.generic]:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


def _strings(values: pa.ChunkedArray) -> Strings:
    encoded = pc.dictionary_encode(values.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).cast(pa.int32())
    return Strings(encoded.dictionary.to_pylist(), _numpy(codes).tobytes())
