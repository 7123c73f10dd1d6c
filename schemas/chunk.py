"""Many messages decoded at once into the lake's columns, each exactly as `decode_event`
would decode it alone.

`decode_event` applies the rules that follow the typed msgspec decode to one message at
a time in Python, and its `Event`s are then taken apart again into columns: about
1.8 µs a message. Here the typed decode still runs message by message (it is C), but
those rules run once per chunk over columns, built from the decoded messages directly:
about 1.3 µs a message (measured on the benchmark's events, 4,096 at a time).

A message a rule doubts, or that the typed decode refuses, is handed to `decode_event`,
whose answer stands: the columnar rules only pick out which messages need it, so a
chunk's answer equals `decode_event`'s message by message (tests/schemas/test_chunk.py
holds the two to each other on random messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from .arrow import POLL_SCHEMA, UTC_MICROS, poll_to_table, stamp_columns, table_of
from .decode import (
    MAX_MS,
    MIN_MS,
    decode_event,
    metadata_text,
    occurred_at_us,
    oversized,
    wire_decoder,
)
from .events import (
    MAX_FUTURE_US,
    MAX_NESTING,
    NO_METADATA,
    RULES,
    Event,
    EventRow,
    Rejected,
    is_tenant_id,
)

_TYPES = list(RULES)
_TYPE_SET = pa.array(_TYPES, pa.string())
_NEEDS_CUSTOMER = np.array([RULES[t].customer for t in _TYPES] + [False])
_NEEDS_LABEL = np.array([RULES[t].label for t in _TYPES] + [False])
_NEEDS_CATEGORY = np.array([RULES[t].category for t in _TYPES] + [False])
_NEEDS_VALUE = np.array([RULES[t].value for t in _TYPES] + [False])
_NON_NEGATIVE = np.array([RULES[t].non_negative_value for t in _TYPES] + [False])
_DEFAULT_CHANNEL = {t: rule.default_channel for t, rule in RULES.items()}


@dataclass(frozen=True)
class Chunk:
    """A chunk's valid events, as the lake's columns and as rows, and its rejects."""

    table: pa.Table
    """The valid events (`POLL_SCHEMA`), in input order."""
    rows: list[EventRow]
    """The same events' fields, in the same order (for their digests)."""
    rejected: list[tuple[int, Rejected]]
    """(position in the chunk, why) of each message that is not a valid event, in order."""


def decode_chunk(raws: Sequence[bytes], offsets: Sequence[int], partition: int,
                 now_us: int) -> Chunk:
    """`raws` (with their `offsets` in input `partition`) at worker time `now_us`."""
    kept: list[int] = []
    doubtful: list[int] = []
    columns = _Columns(_typed(raws, kept, doubtful), now_us)
    doubts = np.flatnonzero(columns.doubted)
    if len(doubts):
        doubtful = sorted(doubtful + [kept[j] for j in doubts.tolist()])
        trusted = np.flatnonzero(columns.doubted == 0).tolist()
        columns.keep(trusted)
        kept = [kept[j] for j in trusted]
    rows = columns.rows()
    table = columns.table([offsets[i] for i in kept], partition, now_us)
    rejected: list[tuple[int, Rejected]] = []
    recovered: list[tuple[int, Event]] = []
    for i in doubtful:
        result = decode_event(raws[i], now_us)
        if type(result) is Event:
            recovered.append((i, result))
        else:
            assert isinstance(result, Rejected)
            rejected.append((i, result))
    if recovered:
        table, rows = _merge(table, rows, kept, recovered, offsets, partition, now_us)
    return Chunk(table, rows, rejected)


def _typed(raws: Sequence[bytes], kept: list[int], doubtful: list[int]) -> list[Any]:
    """The typed decode of each message it takes (`WireEvent`s): the position of each
    one taken goes to `kept`, of each other to `doubtful`."""
    decode = wire_decoder.decode
    wires = []
    for i, raw in enumerate(raws):
        if len(raw) > MAX_NESTING and oversized(raw) is not None:  # a shorter one is neither
            doubtful.append(i)
            continue
        try:
            wires.append(decode(raw))
        except msgspec.DecodeError:  # ValidationError is one too
            doubtful.append(i)
            continue
        kept.append(i)
    return wires


class _Columns:
    """The typed-decoded messages of a chunk as columns, and which of them a rule doubts."""

    def __init__(self, wires: list[Any], now_us: int) -> None:
        self.tenants: list[str] = [w.tenant_id for w in wires]
        self.ids: list[str] = [w.id for w in wires]
        self.types: list[str] = [w.event_type for w in wires]
        self.customers: list[str | None] = [w.customer_id for w in wires]
        self.campaigns: list[str | None] = [w.campaign_id for w in wires]
        self.categories: list[str | None] = [w.category for w in wires]
        self.labels: list[str | None] = [w.label for w in wires]
        self.values: list[float | None] = [w.value for w in wires]
        self.versions: list[int] = [w.schema_version for w in wires]
        self.channels: list[str | None] = [
            w.channel or _DEFAULT_CHANNEL[w.event_type] for w in wires]
        doubted = np.zeros(len(wires), np.uint8)
        self.occurred_us = self._occurred(wires, now_us, doubted)
        self.metadata = self._metadata(wires, doubted)
        self._rules(doubted)
        bad = {t for t in set(self.tenants) if not is_tenant_id(t)}
        if bad:
            doubted |= np.fromiter((t in bad for t in self.tenants), np.bool_, len(wires))
        self.doubted = doubted

    @staticmethod
    def _occurred(wires: list[Any], now_us: int, doubted: npt.NDArray[np.uint8]
                  ) -> npt.NDArray[np.int64]:
        """`occurred_at` as µs, each in years 1-9999 and at most an hour ahead, or
        doubted. Epoch milliseconds are checked as one array; a chunk that holds RFC 3339
        texts (or a number too large for int64) converts them one by one."""
        occurred = [w.occurred_at for w in wires]
        try:
            ms = np.array(occurred, np.int64)
        except (TypeError, OverflowError):
            converted = [occurred_at_us(o) for o in occurred]
            wrong = np.fromiter((type(c) is Rejected for c in converted), np.bool_,
                                len(converted))
            us = np.array([0 if type(c) is Rejected else c for c in converted], np.int64)
        else:
            wrong = (ms < MIN_MS) | (ms > MAX_MS)
            us = np.where(wrong, 0, ms) * 1000
        doubted |= wrong | (us > now_us + MAX_FUTURE_US)
        return us

    @staticmethod
    def _metadata(wires: list[Any], doubted: npt.NDArray[np.uint8]) -> list[str | None]:
        texts: list[str | None] = [None] * len(wires)
        for j, wire in enumerate(wires):
            if wire.metadata is not NO_METADATA:
                text = metadata_text(wire.metadata)
                if isinstance(text, Rejected):
                    doubted[j] = 1
                else:
                    texts[j] = text
        return texts

    def _rules(self, doubted: npt.NDArray[np.uint8]) -> None:
        """Doubt each event missing a field its type requires, or with a negative
        duration where its type forbids one."""
        self.arrays: dict[str, pa.Array[Any]] = {
            "event_type": pa.array(self.types, pa.string()),
            "customer_id": pa.array(self.customers, pa.string()),
            "category": pa.array(self.categories, pa.string()),
            "label": pa.array(self.labels, pa.string()),
            "value": pa.array(self.values, pa.float64()),
        }
        kind = pc.index_in(self.arrays["event_type"], value_set=_TYPE_SET).fill_null(
            len(_TYPES)).to_numpy(zero_copy_only=False)
        value = self.arrays["value"]
        values = value.to_numpy(zero_copy_only=False)  # NaN where null: never below 0
        doubted |= _NEEDS_CUSTOMER[kind] & _nulls(self.arrays["customer_id"])
        doubted |= _NEEDS_LABEL[kind] & _nulls(self.arrays["label"])
        doubted |= _NEEDS_CATEGORY[kind] & _nulls(self.arrays["category"])
        doubted |= _NEEDS_VALUE[kind] & _nulls(value)
        doubted |= _NON_NEGATIVE[kind] & (values < 0)

    def keep(self, trusted: list[int]) -> None:
        """Keep only the events at positions `trusted` in every column."""
        take = pa.array(trusted, pa.int64())
        self.arrays = {name: array.take(take) for name, array in self.arrays.items()}
        self.occurred_us = self.occurred_us[trusted]
        for name in ("tenants", "ids", "types", "customers", "campaigns", "categories",
                     "labels", "values", "versions", "channels", "metadata"):
            column = getattr(self, name)
            setattr(self, name, [column[j] for j in trusted])

    def rows(self) -> list[EventRow]:
        return list(zip(self.tenants, self.ids, self.types, self.occurred_us.tolist(),
                        self.customers, self.campaigns, self.channels, self.categories,
                        self.labels, self.values, self.metadata, self.versions,
                        strict=True))

    def table(self, offsets: list[int], partition: int, ingested_us: int) -> pa.Table:
        return table_of(POLL_SCHEMA, {
            **self.arrays,  # event_type, customer_id, category, label, value
            "id": pa.array(self.ids, pa.string()),
            "campaign_id": pa.array(self.campaigns, pa.string()),
            "channel": pa.array(self.channels, pa.string()),
            "occurred_at": pa.array(self.occurred_us).cast(UTC_MICROS),
            "metadata": pa.array(self.metadata, pa.string()),
            "schema_version": pa.array(self.versions, pa.int32()),
            "tenant_id": pa.array(self.tenants, pa.string()),
            **stamp_columns(len(offsets), partition, offsets, ingested_us),
        })


def _nulls(array: pa.Array[Any]) -> npt.NDArray[np.bool_]:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False))


def _merge(table: pa.Table, rows: list[EventRow], kept: list[int],
           recovered: list[tuple[int, Event]], offsets: Sequence[int], partition: int,
           now_us: int) -> tuple[pa.Table, list[EventRow]]:
    """The columnar events and those `decode_event` accepted after a doubt, in input
    order."""
    events = [event for _, event in recovered]
    extra = poll_to_table(events, partition, [offsets[i] for i, _ in recovered], now_us)
    order = np.argsort(np.array(kept + [i for i, _ in recovered]), kind="stable")
    merged = pa.concat_tables([table, extra]).take(order)
    all_rows = rows + [msgspec.structs.astuple(e) for e in events]
    return merged, [all_rows[j] for j in order.tolist()]
