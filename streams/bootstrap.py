"""Rebuild a keyed partition's whole state from the lake.

Used when a journal comes back empty while the lake remembers earlier broker epochs
(worker start on a fresh embedded broker), and by `pulse replay`. The lake's events go
through the very `PartitionState.process` the live agent uses, in the lake's own
order (kafka_partition, kafka_offset), so the result is what the live path would have
built from the same events.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pulse.rollups.journal import Claim, Snapshot
from pulse.rollups.partition import PartitionState, RollupSpec, SourceBatch
from pulse.rollups.store import RollupStore
from pulse.schemas import lake
from pulse.schemas.events import Event
from pulse.schemas.topics import tenant_partition

log = logging.getLogger("pulse.bootstrap")

_BATCH = 5_000
_COLUMNS = ["id", "event_type", "occurred_at", "customer_id", "campaign_id", "channel",
            "category", "label", "value", "metadata", "schema_version", "kafka_partition",
            "kafka_offset"]


def lake_event_files(
    root: str, tenant_ids: Callable[[str], bool], include: Callable[[lake.LakeFile], bool]
) -> list[tuple[str, lake.LakeFile, str]]:
    """(tenant, file, path) for every live event file of the chosen tenants."""
    events_root = os.path.join(root, lake.EVENTS)
    out = []
    try:
        tenant_dirs = sorted(os.listdir(events_root))
    except FileNotFoundError:
        return []
    for tenant_dir in tenant_dirs:
        if not tenant_dir.startswith("tenant_id="):
            continue
        tenant = tenant_dir.removeprefix("tenant_id=")
        if not tenant_ids(tenant):
            continue
        for date_dir in sorted(os.listdir(os.path.join(events_root, tenant_dir))):
            folder = os.path.join(events_root, tenant_dir, date_dir)
            for name in lake.live_files(os.listdir(folder)):
                parsed = lake.parse_name(name)
                if parsed is not None and include(parsed):
                    out.append((tenant, parsed, os.path.join(folder, name)))
    return out


def read_events(path: str, tenant: str) -> tuple[list[int], list[int], list[Event]]:
    table = pq.read_table(path, columns=_COLUMNS)
    table = table.set_column(
        table.schema.get_field_index("occurred_at"), "occurred_at",
        table.column("occurred_at").cast(pa.int64()),
    )
    cols = {name: table.column(name).to_pylist() for name in _COLUMNS}
    events = [
        Event(tenant, i, t, o, cu, ca, ch, cat, lab, v, m, sv)
        for i, t, o, cu, ca, ch, cat, lab, v, m, sv in zip(
            cols["id"], cols["event_type"], cols["occurred_at"], cols["customer_id"],
            cols["campaign_id"], cols["channel"], cols["category"], cols["label"],
            cols["value"], cols["metadata"], cols["schema_version"], strict=True,
        )
    ]
    return cols["kafka_partition"], cols["kafka_offset"], events


def rebuild_partition(
    root: str,
    spec: RollupSpec,
    partition: int,
    partitions: int,
    include: Callable[[lake.LakeFile], bool],
    applied: dict[int, int],
    below: dict[tuple[str, int], int] | None = None,
) -> Snapshot | None:
    """The state of keyed `partition` from the lake files `include` accepts.

    `below` limits sources (epoch, input partition) to offsets under a bound (the
    committed offsets, for `pulse replay`); `applied` becomes the snapshot's applied
    offsets, so the live stream carries on exactly after what the lake holds.
    """
    files = lake_event_files(
        root, lambda t: tenant_partition(t, partitions) == partition, include)
    if not files:
        return None
    below = below or {}
    rows: list[tuple[int, int, str, Event]] = []
    for tenant, parsed, path in files:
        limit = below.get((parsed.epoch, parsed.partition))
        if limit is not None and parsed.first >= limit:
            continue
        kafka_partitions, offsets, events = read_events(path, tenant)
        for p, o, e in zip(kafka_partitions, offsets, events, strict=True):
            if limit is None or o < limit:
                rows.append((p, o, parsed.epoch, e))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))

    # Each (epoch, input partition) is its own source for the replay guard; negative
    # numbers keep them apart from live input partitions.
    sources: dict[tuple[str, int], int] = {}
    state = PartitionState(spec)
    store = RollupStore()
    fold = store.fold(partition)
    fold.feed(Claim("rebuild"))
    for start in range(0, len(rows), _BATCH):
        entries = []
        for p, o, epoch, e in rows[start : start + _BATCH]:
            source = sources.setdefault((epoch, p), -1 - len(sources))
            entries.append((source, o, e))
        delta = state.process(SourceBatch(entries, {}, {}), "rebuild")
        if delta is not None:
            fold.feed(delta)
    log.info("rebuilt keyed partition %d from %d lake files (%d events)",
             partition, len(files), len(rows))
    snapshot = state.snapshot(store.buckets())
    snapshot.applied = dict(applied)
    return snapshot
