"""One poll, routed to the keyed partitions as columns (`rollups.columns.ColumnBatch`).

Each valid event goes to the partition of its (tenant, id) digest, which deduplicates
and counts it; each dead letter of input partition p is counted by keyed partition
p % n. The events of a poll arrive here as the Arrow table the lake is written from
(`schemas.arrow.POLL_SCHEMA`); the columns the rollups read are turned into numpy arrays
once per poll, strings dictionary-encoded, and each message takes its rows from them:
never a loop over events.

A keyed partition may get several messages from one poll (each under Kafka's message
size limit). Every journal record guards on the highest source offset it applied, so
the messages are cut by position in (source partition, offset) order, dead letters
included: of every source, each message holds offsets before the next one's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pulse.rollups.columns import CUSTOMER_EVENT_TYPE, ColumnBatch, Strings
from pulse.rollups.dedup import keyed_partitions
from pulse.rollups.journal import LakeMark
from pulse.rollups.metrics import EVENT_TYPES
from pulse.schemas.arrow import POLL_SCHEMA

FORWARD_EVENTS = 8_000
"""Events and dead letters per keyed message: about 100 bytes each as columns (800 KB,
below `pulse.kafka.MAX_MESSAGE_BYTES` with room for long strings), and one journal
record covers it. Larger messages cost the rollups less per event (each journal delta
names the hours it touched once): 8,000 rather than 4,000 took their CPU per message
from 5.0 to 4.4 µs in `pulse bench ingest`."""

_KINDS = pa.array(EVENT_TYPES, pa.string())


@dataclass
class _Source:
    """One input partition's events of a poll, with their id and content digests."""

    source: int
    rows: pa.Table
    digests: bytes
    contents: list[int]


@dataclass
class PollRouter:
    """Collects a poll, input partition by input partition, then cuts the messages."""

    partitions: int
    _sources: list[_Source] = field(default_factory=list)
    _dead: dict[int, list[tuple[int, int, str]]] = field(
        default_factory=lambda: defaultdict(list))
    _columns: _PollColumns | None = None

    def add(self, source: int, events: pa.Table, digests: bytes, contents: list[int],
            dead: list[tuple[int, str]]) -> None:
        """An input partition's events (`POLL_SCHEMA`, in offset order) with their id
        and content digests, and its dead letters as (offset, reason)."""
        for offset, reason in dead:
            self._dead[source % self.partitions].append((source, offset, reason))
        if events.num_rows:
            self._sources.append(_Source(source, events, digests, contents))
            self._columns = None

    def has(self, q: int) -> bool:
        """Whether the poll holds anything for keyed partition `q`."""
        return bool(self._dead.get(q)) or (bool(self._sources)
                                           and len(self._poll().rows_of(q)) > 0)

    def messages(self, q: int, progress: dict[int, int],
                 lake: dict[int, LakeMark]) -> list[ColumnBatch]:
        """What partition `q` is sent for this poll: at least one message (it carries
        `progress` and `lake`, on the last message only, as each is its own journal
        record and an earlier one must not claim the later ones)."""
        poll = self._poll()
        rows = poll.rows_of(q)
        dead = sorted(self._dead.get(q, []))
        sources = np.concatenate([poll.sources[rows], np.array([d[0] for d in dead], np.int32)])
        offsets = np.concatenate([poll.offsets[rows], np.array([d[1] for d in dead], np.int64)])
        order = np.lexsort((offsets, sources))
        if not len(order):
            return [poll.batch(None, [], progress, lake)]
        out = []
        for start in range(0, len(order), FORWARD_EVENTS):
            piece = order[start:start + FORWARD_EVENTS]
            mine = np.sort(piece[piece < len(rows)])
            last = start + FORWARD_EVENTS >= len(order)
            out.append(poll.batch(rows[mine] if len(mine) else None,
                                  [dead[i - len(rows)] for i in piece[piece >= len(rows)]],
                                  progress if last else {}, lake if last else {}))
        return out

    def _poll(self) -> _PollColumns:
        if self._columns is None:
            self._columns = _PollColumns(sorted(self._sources, key=lambda s: s.source),
                                         self.partitions)
        return self._columns


class _PollColumns:
    """A poll's events as the numpy columns of `ColumnBatch`, computed once for every
    keyed partition (each message then takes its rows from them), with each string
    column dictionary-encoded over the whole poll."""

    def __init__(self, sources: list[_Source], partitions: int) -> None:
        if sources:
            rows = pa.concat_tables([s.rows.select(_ROLLUP_COLUMNS) for s in sources])
            rows = rows.combine_chunks()
            digests = b"".join(s.digests for s in sources)
        else:
            rows = pa.table({name: pa.array([], POLL_SCHEMA.field(name).type)
                             for name in _ROLLUP_COLUMNS})
            digests = b""
        column = rows.column
        self.sources = np.concatenate([np.full(s.rows.num_rows, s.source, np.int32)
                                       for s in sources] or [np.empty(0, np.int32)])
        self.offsets = _numpy(column("kafka_offset")).astype(np.int64, copy=False)
        self.digests = np.frombuffer(digests, "V16")
        self.contents = np.concatenate([np.array(s.contents, np.uint32) for s in sources]
                                       or [np.empty(0, np.uint32)])
        self.occurred = _numpy(column("occurred_at").cast(pa.int64()))
        self.values = _numpy(pc.fill_null(column("value"), np.nan))
        self.kinds = _numpy(pc.index_in(column("event_type"), value_set=_KINDS)).astype(np.int8)
        self.chats = _numpy(pc.fill_null(pc.equal(column("channel"), "chat"), False))
        self.strings = {name: _encoded(column(name)) for name in _STRING_COLUMNS}
        steps = pc.equal(column("event_type"), CUSTOMER_EVENT_TYPE)
        self.strings["customer_id"] = _encoded(pc.if_else(steps, column("customer_id"), None))
        targets = keyed_partitions(digests, partitions)
        # One stable sort into partition order: each partition's rows stay in (source,
        # offset) order, the order the sources were concatenated in.
        self._order = np.argsort(targets, kind="stable")
        self._starts = np.searchsorted(targets[self._order], np.arange(partitions + 1))

    def rows_of(self, q: int) -> npt.NDArray[np.intp]:
        """Positions of partition `q`'s events, in (source, offset) order."""
        return self._order[self._starts[q]:self._starts[q + 1]]

    def batch(self, rows: npt.NDArray[np.intp] | None, dead: list[tuple[int, int, str]],
              progress: dict[int, int], lake: dict[int, LakeMark]) -> ColumnBatch:
        if rows is None:
            return ColumnBatch(b"", b"", b"", b"", b"", b"", b"", b"", *(_NO_STRINGS,) * 5,
                               dead, progress, lake)
        strings = self.strings
        return ColumnBatch(
            sources=self.sources[rows].tobytes(), offsets=self.offsets[rows].tobytes(),
            digests=self.digests[rows].tobytes(), contents=self.contents[rows].tobytes(),
            occurred=self.occurred[rows].tobytes(), values=self.values[rows].tobytes(),
            kinds=self.kinds[rows].tobytes(), chats=self.chats[rows].tobytes(),
            tenants=_compact(*strings["tenant_id"], rows),
            campaigns=_compact(*strings["campaign_id"], rows),
            labels=_compact(*strings["label"], rows),
            categories=_compact(*strings["category"], rows),
            customers=_compact(*strings["customer_id"], rows),
            dead=dead, progress=progress, lake=lake)


_STRING_COLUMNS = ("tenant_id", "campaign_id", "label", "category")
_ROLLUP_COLUMNS = ["kafka_offset", "occurred_at", "value", "event_type", "channel",
                   *_STRING_COLUMNS, "customer_id"]
"""What the rollups read of a poll (a lake row's id, metadata and versions stay in the
lake); of `customer_id`, `_PollColumns` keeps only the `CUSTOMER_EVENT_TYPE` events'."""
_NO_STRINGS = Strings([], b"")


def _array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array (a column of the combined poll is one chunk already)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _numpy(values: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    return _array(values).to_numpy(zero_copy_only=False)


def _encoded(values: pa.ChunkedArray | pa.Array) -> tuple[list[str], npt.NDArray[np.int32]]:
    """A string column as (its distinct values, per row a code into them, -1 for null)."""
    encoded = pc.dictionary_encode(_array(values))
    codes = _numpy(pc.fill_null(encoded.indices, -1).cast(pa.int32()))
    return encoded.dictionary.to_pylist(), codes


def _compact(values: list[str], codes: npt.NDArray[np.int32], rows: npt.NDArray[np.intp]
             ) -> Strings:
    """The `Strings` of `rows`: only the values they use, so a message carries its own
    customers, not the whole poll's."""
    mine = codes[rows]
    used = np.flatnonzero(np.bincount(mine + 1, minlength=len(values) + 1)[1:])
    recode = np.full(len(values) + 1, -1, np.int32)
    recode[used + 1] = np.arange(len(used), dtype=np.int32)
    return Strings([values[i] for i in used.tolist()], recode[mine + 1].tobytes())
