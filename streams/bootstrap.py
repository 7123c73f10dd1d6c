"""Rebuild a keyed partition's whole state from the lake.

Used when a journal comes back empty while the lake remembers earlier broker epochs
(worker start on a fresh embedded broker), and by `pulse replay`. The lake's events
and dead letters go through the very `PartitionState.process` the live agent uses, in
the lake's own order (kafka_partition, kafka_offset), so the result is what the live
path would have built from the same messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa

from pulse.lakefs import LakeDir, LakeStore, lake_dirs, live
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.journal import Claim, LakeMark, Snapshot
from pulse.rollups.partition import PartitionState, RollupSpec, SourceBatch
from pulse.rollups.store import RollupStore
from pulse.schemas import lake
from pulse.schemas.events import Event
from pulse.schemas.topics import tenant_partition
from pulse.settings import Settings

log = logging.getLogger("pulse.bootstrap")

_BATCH = 5_000
_COLUMNS = ["id", "event_type", "occurred_at", "customer_id", "campaign_id", "channel",
            "category", "label", "value", "metadata", "schema_version", "kafka_partition",
            "kafka_offset"]

Include = Callable[[lake.LakeFile], bool]
Row = tuple[int, int, str, "Event | str"]
"""(input partition, offset, epoch, event or dead-letter reason)."""


def rollup_spec(settings: Settings) -> RollupSpec:
    """The definitions the rollups are built with; changing them needs `pulse replay`."""
    return RollupSpec(FunnelSpec(settings.funnel_steps), settings.engaged_seconds,
                      settings.retention_days * 24)


def lake_event_files(
    store: LakeStore, tenant_ids: Callable[[str], bool], include: Include
) -> list[tuple[str, lake.LakeFile, str]]:
    """(tenant, file, path) for every live event file of the chosen tenants."""
    return [(folder.tenant_id, parsed, path)
            for folder, entries in lake_dirs(store, lake.EVENTS).items()
            if folder.tenant_id is not None and tenant_ids(folder.tenant_id)
            for parsed, path in _live(folder, entries, include)]


def _live(folder: LakeDir, entries: list, include: Include) -> list[tuple[lake.LakeFile, str]]:
    out = []
    for path in live(folder, entries):
        parsed = lake.parse_name(path.rpartition("/")[2])
        if parsed is not None and include(parsed):
            out.append((parsed, path))
    return out


def read_events(store: LakeStore, path: str,
                tenant: str) -> tuple[list[int], list[int], list[Event]]:
    table = store.read_table(path, columns=_COLUMNS)
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


def _rows(store: LakeStore, partition: int, partitions: int, include: Include,
          below: dict[tuple[str, int], int]) -> list[Row]:
    """Every event of the partition's tenants and every dead letter routed to it."""
    rows: list[Row] = []

    def wanted(parsed: lake.LakeFile) -> int | None:
        limit = below.get((parsed.epoch, parsed.partition))
        return -1 if limit is not None and parsed.first >= limit else limit

    for tenant, parsed, path in lake_event_files(
            store, lambda t: tenant_partition(t, partitions) == partition, include):
        limit = wanted(parsed)
        if limit == -1:
            continue
        kafka_partitions, offsets, events = read_events(store, path, tenant)
        rows.extend((p, o, parsed.epoch, e)
                    for p, o, e in zip(kafka_partitions, offsets, events, strict=True)
                    if limit is None or o < limit)
    for folder, entries in lake_dirs(store, lake.DEAD_LETTERS).items():
        for parsed, path in _live(folder, entries, include):
            limit = wanted(parsed)
            # Dead letters of input partition p are counted by keyed partition p % n.
            if limit == -1 or parsed.partition % partitions != partition:
                continue
            table = store.read_table(path, columns=["reason", "kafka_partition", "kafka_offset"])
            rows.extend((p, o, parsed.epoch, reason) for reason, p, o in zip(
                *(table.column(c).to_pylist() for c in ("reason", "kafka_partition",
                                                        "kafka_offset")), strict=True)
                if limit is None or o < limit)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return rows


def rebuild_partition(
    store: LakeStore,
    spec: RollupSpec,
    partition: int,
    partitions: int,
    include: Include,
    applied: dict[int, int],
    below: dict[tuple[str, int], int] | None = None,
    complete: dict[int, int] | None = None,
) -> Snapshot:
    """The state of keyed `partition` from the lake files `include` accepts.

    `below` limits sources (epoch, input partition) to offsets under a bound (the
    committed offsets, for `pulse replay`); `applied` becomes the snapshot's applied
    offsets, so the live stream carries on exactly after what the lake holds, and
    `complete` (input partition -> µs) says how far the lake, and so the snapshot, holds
    everything produced: answers carry it as their `as_of` from the first one on.
    """
    rows = _rows(store, partition, partitions, include, below or {})
    # Each (epoch, input partition) is its own source for the replay guard; negative
    # numbers keep them apart from live input partitions.
    sources: dict[tuple[str, int], int] = {}
    state = PartitionState(spec)
    store = RollupStore()
    fold = store.fold(partition)
    fold.feed(Claim("rebuild"))
    for start in range(0, len(rows), _BATCH):
        entries = [(sources.setdefault((epoch, p), -1 - len(sources)), o, item)
                   for p, o, epoch, item in rows[start : start + _BATCH]]
        delta = state.process(SourceBatch(entries, {}, {}), "rebuild")
        if delta is not None:
            fold.feed(delta)
    if rows:
        log.info("rebuilt keyed partition %d from the lake (%d messages)", partition, len(rows))
    snapshot = state.snapshot(store.buckets())
    snapshot.applied = dict(applied)
    if complete:
        snapshot.progress = dict(complete)
        snapshot.lake = {p: LakeMark(as_of_us, 0) for p, as_of_us in complete.items()}
    return snapshot
