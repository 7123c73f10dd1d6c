"""What the ingest stage forwards to a keyed partition: a batch of events as columns.

One message carries a few thousand events, so they travel as columns rather than as
records: fixed-width fields as packed numpy bytes, each string field dictionary-encoded
(`Strings`: a tenant, campaign, label or category repeats across a batch, so each
distinct value is sent once and the fold groups by integer codes). The rollup process
decodes a batch without building one object per event and folds it vectorised
(`metrics.fold_columns`); only its funnel steps become Python tuples.

Only what the rollups read travels: a lake row's id, metadata and schema version stay in
the lake. `from_events` builds the same batch from `Event`s, for the rebuild from the
lake and for tools that route by hand (`rollups.local`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from pulse.schemas.events import Event

from .journal import LakeMark
from .metrics import EVENT_TYPES, EventColumns

_KIND = {kind: code for code, kind in enumerate(EVENT_TYPES)}
CUSTOMER_EVENT_TYPE = "funnel_step"
"""The one event type whose customer a `ColumnBatch` carries (every builder keeps to it)."""


class Strings(msgspec.Struct, array_like=True, gc=False):
    """A dictionary-encoded string column: per row an int32 code into `values`, -1 for
    null."""

    values: list[str]
    codes: bytes

    @classmethod
    def encode(cls, items: Sequence[str | None]) -> Strings:
        index: dict[str, int] = {}
        codes = [-1 if item is None else index.setdefault(item, len(index)) for item in items]
        return cls(list(index), np.array(codes, np.int32).tobytes())

    def array(self) -> npt.NDArray[np.int32]:
        return np.frombuffer(self.codes, np.int32)


class ColumnBatch(msgspec.Struct, tag="columns", array_like=True, gc=False):
    """Events for one keyed partition, in source-offset order per source partition,
    plus the dead letters it counts and how far each source partition has been read
    (`progress`) and written to the lake (`lake`)."""

    sources: bytes
    """int32 per event: its source (input) partition."""
    offsets: bytes
    """int64: its source offset."""
    digests: bytes
    """16 bytes: its id digest (`dedup.id_digest`)."""
    contents: bytes
    """uint32: its content digest (`dedup.content_digest`)."""
    occurred: bytes
    """int64: `occurred_at` in µs."""
    values: bytes
    """float64: `value`, NaN where the event has none."""
    kinds: bytes
    """int8: `event_type` as its position in `metrics.EVENT_TYPES`."""
    chats: bytes
    """bool: the normalized channel is chat."""
    tenants: Strings
    campaigns: Strings
    labels: Strings
    categories: Strings
    customers: Strings
    """The customer of each `CUSTOMER_EVENT_TYPE` event (null for every other event:
    nothing else reads it, and most events' customers are distinct strings)."""
    dead: list[tuple[int, int, str]]
    progress: dict[int, int]
    lake: dict[int, LakeMark]

    def __len__(self) -> int:
        return len(self.offsets) // 8


@dataclass(frozen=True)
class BatchColumns(EventColumns):
    """A `ColumnBatch` decoded: zero-copy numpy views of its bytes."""

    sources: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    hi: npt.NDArray[np.uint64]
    lo: npt.NDArray[np.uint64]
    contents: npt.NDArray[np.uint32]
    customer: npt.NDArray[np.int32]
    customers: list[str]

    @classmethod
    def of(cls, batch: ColumnBatch) -> BatchColumns:
        pairs = np.frombuffer(batch.digests, "<u8").reshape(-1, 2)
        return cls(
            occurred=np.frombuffer(batch.occurred, np.int64),
            values=np.frombuffer(batch.values, np.float64),
            kinds=np.frombuffer(batch.kinds, np.int8),
            chats=np.frombuffer(batch.chats, np.bool_),
            tenant=batch.tenants.array(), campaign=batch.campaigns.array(),
            label=batch.labels.array(), category=batch.categories.array(),
            tenants=batch.tenants.values, campaigns=batch.campaigns.values,
            labels=batch.labels.values, categories=batch.categories.values,
            sources=np.frombuffer(batch.sources, np.int32),
            offsets=np.frombuffer(batch.offsets, np.int64),
            hi=np.ascontiguousarray(pairs[:, 0]), lo=np.ascontiguousarray(pairs[:, 1]),
            contents=np.frombuffer(batch.contents, np.uint32),
            customer=batch.customers.array(), customers=batch.customers.values)


def from_events(sources: Sequence[int], offsets: Sequence[int], digests: bytes,
                contents: Sequence[int], events: Sequence[Event],
                dead: list[tuple[int, int, str]], progress: dict[int, int] | None = None,
                lake: dict[int, LakeMark] | None = None) -> ColumnBatch:
    """The batch of `events` (with their sources, offsets, id and content digests)."""
    return ColumnBatch(
        sources=np.array(sources, np.int32).tobytes(),
        offsets=np.array(offsets, np.int64).tobytes(),
        digests=digests,
        contents=np.array(contents, np.uint32).tobytes(),
        occurred=np.array([e.occurred_us for e in events], np.int64).tobytes(),
        values=np.array([np.nan if e.value is None else e.value for e in events],
                        np.float64).tobytes(),
        kinds=np.array([_KIND[e.event_type] for e in events], np.int8).tobytes(),
        chats=np.array([e.channel == "chat" for e in events], np.bool_).tobytes(),
        tenants=Strings.encode([e.tenant_id for e in events]),
        campaigns=Strings.encode([e.campaign_id for e in events]),
        labels=Strings.encode([e.label for e in events]),
        categories=Strings.encode([e.category for e in events]),
        customers=Strings.encode([e.customer_id if e.event_type == CUSTOMER_EVENT_TYPE else None
                                  for e in events]),
        dead=dead, progress=progress or {}, lake=lake or {})
