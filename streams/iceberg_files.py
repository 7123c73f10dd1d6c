"""What the Iceberg tables say of each lake file, and which files a flush writes.

The sink records a file's statistics from the footer it has just written (`FileStats`),
in the form pyiceberg's table entries take, so that no commit reads the file back; the
intent marker keeps them as JSON (`TableFile.to_json`). `streams.iceberg` commits the
files; this module only describes them, and needs no catalog.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pulse.lakefs import LakeStore
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA

OFFSETS = "pulse.offsets."
"""Prefix of the snapshot summary keys that carry each source's committed offset."""
BOUNDED = {
    lake.EVENTS: ("event_type", "campaign_id", "channel", "category", "label",
                  "occurred_at", "ingested_at", "kafka_partition", "kafka_offset"),
    lake.DEAD_LETTERS: ("reason", "kafka_topic", "kafka_partition", "kafka_offset",
                        "received_at"),
}
"""The columns whose bounds each entry carries, for engines to prune files by: times,
offsets and the few-valued columns. Ids, JSON and raw bytes span any file's whole range,
so their bounds would only fatten every entry and intent marker; they keep counts."""
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",  # see the module doc: Pulse re-checks, then retries
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "2",  # only `merge_manifests` merge-appends
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
    "write.metadata.metrics.default": "counts",
}


def table_properties(kind: str) -> dict[str, str]:
    """What Pulse sets on the table of `kind`, at creation and on tables made before."""
    return {**TABLE_PROPERTIES, **{f"write.metadata.metrics.column.{column}": "truncate(16)"
                                   for column in BOUNDED[kind]}}


def arrow_schema(kind: str) -> pa.Schema:
    """The table's columns with their field ids: events gain the partition's `tenant_id`."""
    if kind == lake.DEAD_LETTERS:
        return DEAD_LETTER_SCHEMA
    return pa.schema([*EVENT_SCHEMA, pa.field("tenant_id", pa.string(), metadata={
        b"PARQUET:field_id": str(len(EVENT_SCHEMA) + 1).encode()})])


Plan = tuple[dict[int, Any], dict[str, int]]
"""pyiceberg's statistics plan (field id -> metrics mode) and Parquet path -> field id."""


@functools.cache
def writer_plan(kind: str) -> Plan:
    """The plan of the tables as Pulse makes them, worked out once per process: the sink
    computes statistics without asking the catalog, which may be down."""
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        parquet_path_to_id_mapping,
        pyarrow_to_schema,
    )

    schema = pyarrow_to_schema(arrow_schema(kind))
    return compute_statistics_plan(schema, table_properties(kind)), parquet_path_to_id_mapping(
        schema)


def table_plan(table: Any) -> Plan:
    """The plan of `table` as the catalog has it (once per commit, for footers read)."""
    from pyiceberg.io.pyarrow import compute_statistics_plan, parquet_path_to_id_mapping

    schema = table.schema()
    return (compute_statistics_plan(schema, table.metadata.properties),
            parquet_path_to_id_mapping(schema))


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _unb64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


@dataclass(frozen=True)
class FileStats:
    """What a table entry says of a Parquet file, from its footer: taken by the sink
    from the footer it has just written, so that no commit reads a file back."""

    size: int
    rows: int
    columns: tuple[tuple[int, int, int | None, int | None, bytes | None, bytes | None], ...]
    """(field id, compressed bytes, values, nulls, lower bound, upper bound) per column."""
    splits: tuple[int, ...]

    @classmethod
    def of(cls, footer: pq.FileMetaData, size: int, plan: Plan) -> FileStats:
        from pyiceberg.io.pyarrow import data_file_statistics_from_parquet_metadata

        s = data_file_statistics_from_parquet_metadata(footer, *plan).to_serialized_dict()
        return cls(size, s["record_count"], tuple(
            (fid, n, s["value_counts"].get(fid), s["null_value_counts"].get(fid),
             s["lower_bounds"].get(fid), s["upper_bounds"].get(fid))
            for fid, n in sorted(s["column_sizes"].items())), tuple(s["split_offsets"]))

    @classmethod
    def read(cls, store: LakeStore, rel: str, plan: Plan) -> FileStats:
        """From the file's footer in the store (files written without them recorded)."""
        with store.arrow_fs.open_input_file(store.arrow_path(rel)) as fh:
            size = fh.size()
            footer = pq.read_metadata(fh)
        return cls.of(footer, size, plan)

    def entry(self) -> dict[str, Any]:
        """The statistics arguments of pyiceberg's `DataFile.from_args`."""
        cols = self.columns
        return {
            "record_count": self.rows, "file_size_in_bytes": self.size,
            "column_sizes": {c[0]: c[1] for c in cols},
            "value_counts": {c[0]: c[2] for c in cols if c[2] is not None},
            "null_value_counts": {c[0]: c[3] for c in cols if c[3] is not None},
            "nan_value_counts": {},  # pyiceberg takes none from Parquet footers either
            "lower_bounds": {c[0]: c[4] for c in cols if c[4] is not None},
            "upper_bounds": {c[0]: c[5] for c in cols if c[5] is not None},
            "split_offsets": list(self.splits),
        }

    def to_json(self) -> list[Any]:
        return [self.size, self.rows, [[f, n, v, z, _b64(lo), _b64(hi)]
                                       for f, n, v, z, lo, hi in self.columns],
                list(self.splits)]

    @classmethod
    def from_json(cls, data: list[Any]) -> FileStats:
        size, rows, columns, splits = data
        return cls(int(size), int(rows), tuple(
            (int(f), int(n), v, z, _unb64(lo), _unb64(hi)) for f, n, v, z, lo, hi in columns),
            tuple(int(s) for s in splits))


@dataclass(frozen=True)
class TableFile:
    """One lake file as the Iceberg committer sees it."""

    rel: str
    kind: str
    """`lake.EVENTS` or `lake.DEAD_LETTERS`: the table it goes to."""
    tenant_id: str | None
    day: int
    source: str
    """The summary key of its (epoch, input partition)."""
    last: int
    stats: FileStats | None = None
    """Recorded when it was written; None: its footer is read when it is committed."""

    def to_json(self) -> list[Any]:
        head = [self.rel, self.kind, self.tenant_id, self.day, self.source, self.last]
        return head if self.stats is None else [*head, self.stats.to_json()]

    @classmethod
    def from_json(cls, data: list[Any]) -> TableFile:
        """Also the six fields of markers written before statistics were recorded."""
        rel, kind, tenant_id, day, source, last, *stats = data
        return cls(rel, kind, tenant_id, int(day), source, int(last),
                   FileStats.from_json(stats[0]) if stats else None)


def source_key(epoch: str, partition: int) -> str:
    return f"{OFFSETS}{epoch}.{partition}"


def flush_files(epoch: str, partition: int, first: int, last: int,
                event_folders: Iterable[tuple[str, int]],
                dead_days: Iterable[int]) -> list[TableFile]:
    """The files a flush writes (their names are known before they are written)."""
    name = lake.LakeFile(epoch, partition, first, last).name
    source = source_key(epoch, partition)
    out = [TableFile(f"{lake.event_dir(t, d)}/{name}", lake.EVENTS, t, d, source, last)
           for t, d in event_folders]
    out += [TableFile(f"{lake.dead_letter_dir(d)}/{name}", lake.DEAD_LETTERS, None, d, source,
                      last) for d in dead_days]
    return out
