"""The lake's Arrow schemas (contract section 5) and the columnar form of a batch.

`tenant_id` and `date` are not columns in the files: they are the hive folders
`tenant_id=<tenant>/date=<YYYY-MM-DD>`, which every reader gets back with
`hive_partitioning = true`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from .events import Event

UTC_MICROS = pa.timestamp("us", tz="UTC")


def _with_ids(fields: list[pa.Field[Any]], first: int = 1) -> pa.Schema:
    """Number the columns as Parquet field ids (written into every file), so engines
    that read by id (Iceberg readers: Trino, Spark, ClickHouse, DuckDB's iceberg) find
    them. Ids are fixed forever: a new column takes the next number, never a used one."""
    return pa.schema([f.with_metadata({b"PARQUET:field_id": str(i).encode()})
                      for i, f in enumerate(fields, first)])


EVENT_SCHEMA = _with_ids(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("customer_id", pa.string()),
        pa.field("campaign_id", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("category", pa.string()),
        pa.field("label", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("occurred_at", UTC_MICROS, nullable=False),
        pa.field("metadata", pa.string()),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("ingested_at", UTC_MICROS, nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)

TENANT_FIELD = pa.field("tenant_id", pa.string(), nullable=False, metadata={
    b"PARQUET:field_id": str(len(EVENT_SCHEMA) + 1).encode()})
"""The tenant, a hive folder in the lake rather than a column of its files; as a column
(in a poll's rows, and in the Iceberg table) it takes the next field id."""
POLL_SCHEMA = pa.schema([*EVENT_SCHEMA, TENANT_FIELD])
"""A poll's events as the ingest stage holds them: the lake's columns and the tenant."""

DEAD_LETTER_SCHEMA = _with_ids(
    [
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("kafka_topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("received_at", UTC_MICROS, nullable=False),
    ]
)


def table_of(schema: pa.Schema, columns: Mapping[str, pa.Array[Any]]) -> pa.Table:
    """`columns`, by name, as a table of `schema`: a builder names each column, and only
    the schema says in which order they stand."""
    return pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)


def stamp_columns(n: int, partition: int, offsets: Sequence[int],
                  ingested_us: int) -> dict[str, pa.Array[Any]]:
    """What the ingest stage adds to `n` events read from input `partition` at `offsets`."""
    return {
        "ingested_at": pa.nulls(n, pa.int64()).fill_null(ingested_us).cast(UTC_MICROS),
        "kafka_partition": pa.nulls(n, pa.int32()).fill_null(partition),
        "kafka_offset": pa.array(offsets, pa.int64()),
    }


def events_to_table(
    events: Sequence[Event],
    partition: int,
    offsets: Sequence[int],
    ingested_us: int,
) -> pa.Table:
    """The lake columns of one folder's events (tenant and date are the folder)."""
    return table_of(EVENT_SCHEMA, {
        "id": pa.array([e.id for e in events], pa.string()),
        "event_type": pa.array([e.event_type for e in events], pa.string()),
        "customer_id": pa.array([e.customer_id for e in events], pa.string()),
        "campaign_id": pa.array([e.campaign_id for e in events], pa.string()),
        "channel": pa.array([e.channel for e in events], pa.string()),
        "category": pa.array([e.category for e in events], pa.string()),
        "label": pa.array([e.label for e in events], pa.string()),
        "value": pa.array([e.value for e in events], pa.float64()),
        "occurred_at": pa.array([e.occurred_us for e in events], pa.int64()).cast(UTC_MICROS),
        "metadata": pa.array([e.metadata for e in events], pa.string()),
        "schema_version": pa.array([e.schema_version for e in events], pa.int32()),
        **stamp_columns(len(events), partition, offsets, ingested_us),
    })


def poll_to_table(events: Sequence[Event], partition: int, offsets: Sequence[int],
                  ingested_us: int) -> pa.Table:
    """A poll's events of one input partition (`POLL_SCHEMA`): built once, then split
    into lake folders and into the columns each keyed partition is sent."""
    table = events_to_table(events, partition, offsets, ingested_us)
    return table.append_column(TENANT_FIELD, pa.array([e.tenant_id for e in events],
                                                      pa.string()))
