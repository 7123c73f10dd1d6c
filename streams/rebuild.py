"""Rebuild keyed partitions' state from the lake, when nothing else can say what it was.

Used by `pulse replay`, when a journal comes back empty while the lake remembers earlier
broker epochs (a worker on a fresh embedded broker), and when the journal or the keyed
topic no longer holds what follows a partition's newest checkpoint (workers stopped for
longer than the retention). It reads the whole lake, so it costs what history costs:
checkpoints exist so that it is rare.

The lake's events and dead letters go through the very `PartitionState.process` the
live agent uses, in the lake's own order (source partition, offset): first each
partition's share of events (by their id digest) and the dead letters it counts, then
the funnel steps of its journeys, taken from the first copy of every event in the lake
(contract section 5), as the live path takes them from the partitions that count them.
Above the retention horizon the result is what the live path built from the same
messages, whatever the order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from pulse.lakefs import Entry, LakeDir, LakeStore, lake_dirs, live
from pulse.rollups.columns import ColumnBatch, from_events
from pulse.rollups.dedup import SeenSet, content_digest, id_digest, keyed_partition
from pulse.rollups.journal import LakeMark
from pulse.rollups.partition import (
    PartitionState,
    RollupSpec,
    StepBatch,
    journey_partition,
)
from pulse.schemas import lake
from pulse.schemas.events import Event

log = logging.getLogger("pulse.rebuild")

BATCH = 5_000
_COLUMNS = ["id", "event_type", "occurred_at", "customer_id", "campaign_id", "channel",
            "category", "label", "value", "metadata", "schema_version", "kafka_partition",
            "kafka_offset"]

Include = Callable[[lake.LakeFile], bool]
Source = tuple[str, int]
"""(epoch, input partition): each is its own source for the replay guard."""


def read_events(store: LakeStore, path: str,
                tenant: str) -> tuple[list[int], list[int], list[Event]]:
    """(input partitions, offsets, events) of one lake file of `tenant`.

    pyarrow is imported here, when a rebuild first reads the lake, so that a rollup
    process that never rebuilds never loads it (see `pulse.lakefs`)."""
    import pyarrow as pa

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


class _SourceFiles:
    """The live lake files of one source (events of every tenant, and dead letters)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        """(tenant, path)."""
        self.dead: list[str] = []


def _files_by_source(store: LakeStore, include: Include,
                     below: dict[Source, int]) -> dict[Source, _SourceFiles]:
    found: dict[Source, _SourceFiles] = defaultdict(_SourceFiles)

    def wanted(parsed: lake.LakeFile) -> bool:
        limit = below.get((parsed.epoch, parsed.partition))
        return limit is None or parsed.first < limit

    for folder, entries in lake_dirs(store, lake.EVENTS).items():
        if folder.tenant_id is None:
            continue
        for parsed, path in _live(folder, entries, include):
            if wanted(parsed):
                found[(parsed.epoch, parsed.partition)].events.append((folder.tenant_id, path))
    for folder, entries in lake_dirs(store, lake.DEAD_LETTERS).items():
        for parsed, path in _live(folder, entries, include):
            if wanted(parsed):
                found[(parsed.epoch, parsed.partition)].dead.append(path)
    return found


def _read_source(store: LakeStore, files: _SourceFiles, limit: int | None
                 ) -> tuple[list[tuple[int, Event, bytes]], list[tuple[int, str]]]:
    """One source's (offset, event, id digest) rows and (offset, reason) dead letters,
    each in offset order, below `limit`."""
    rows = []
    for tenant, path in files.events:
        _, offsets, events = read_events(store, path, tenant)
        rows.extend((offset, event, id_digest(event.tenant_id, event.id))
                    for offset, event in zip(offsets, events, strict=True)
                    if limit is None or offset < limit)
    dead = []
    for path in files.dead:
        table = store.read_table(path, columns=["reason", "kafka_offset"])
        dead.extend((offset, reason) for reason, offset in zip(
            table.column("reason").to_pylist(), table.column("kafka_offset").to_pylist(),
            strict=True) if limit is None or offset < limit)
    rows.sort(key=lambda r: r[0])
    dead.sort()
    return rows, dead


def _live(folder: LakeDir, entries: list[Entry],
          include: Include) -> list[tuple[lake.LakeFile, str]]:
    out = []
    for path in live(folder, entries):
        parsed = lake.parse_name(path.rpartition("/")[2])
        if parsed is not None and include(parsed):
            out.append((parsed, path))
    return out


def rebuild(store: LakeStore, spec: RollupSpec, seen: dict[int, SeenSet], include: Include,
            applied: dict[int, int], below: dict[Source, int] | None = None,
            complete: dict[int, int] | None = None) -> dict[int, PartitionState]:
    """The state of each keyed partition of `seen` from the lake files `include` takes.

    `below` limits sources to offsets under a bound (the ingest group's committed
    offsets: exactly what the lake is complete with); `applied` becomes each state's
    applied offsets, so the live stream carries on exactly after what the lake holds,
    and `complete` (input partition -> µs) says how far the lake holds everything
    produced: answers carry it as their `as_of` from the first one on.
    """
    below = below or {}
    states = {q: PartitionState(spec, q, s) for q, s in seen.items()}
    keyed = dict.fromkeys(states, 0)
    """Each partition's own keyed offsets, as if the lake's rows came through its topic."""
    steps: dict[int, list[tuple[Source, int, int, Event]]] = defaultdict(list)
    by_source = _files_by_source(store, include, below)
    # Negative source ids keep each (epoch, input partition) apart from live partitions.
    for n, source in enumerate(sorted(by_source)):
        sid = -1 - n
        rows, dead = _read_source(store, by_source[source], below.get(source))
        for q, state in states.items():
            mine: list[tuple[int, Event | str, bytes]] = [
                r for r in rows if keyed_partition(r[2], spec.partitions) == q]
            if source[1] % spec.partitions == q:  # dead letters of input p count in p % n
                mine = sorted(mine + [(offset, reason, b"") for offset, reason in dead],
                              key=lambda r: r[0])
            for start in range(0, len(mine), BATCH):
                state.process(_event_batch(sid, mine[start:start + BATCH]), keyed[q], "rebuild")
                keyed[q] += 1
        _collect_steps(rows, source, spec, states, steps)
    for q, state in states.items():
        firsts = _first_copies(steps[q])
        for start in range(0, len(firsts), BATCH):
            state.process(StepBatch(-1, None, firsts[start:start + BATCH]), keyed[q], "rebuild")
            keyed[q] += 1
        state.applied = dict(applied)
        state.keyed_next = -1
        state.upstream = {}
        if complete:
            state.progress = dict(complete)
            state.lake = {p: LakeMark(as_of_us, 0) for p, as_of_us in complete.items()}
            # The journeys hold every step the lake holds: as complete as the lake is.
            state.upstream = dict.fromkeys(range(spec.partitions), min(complete.values()))
        log.info("rebuilt keyed partition %d from the lake: %d messages", q,
                 state.counters.get("read", 0))
    return states


def _event_batch(sid: int, rows: list[tuple[int, Event | str, bytes]]) -> ColumnBatch:
    """One source's rows (events and dead letters, in offset order) as the ingest stage
    would have forwarded them."""
    events = [(offset, e, digest) for offset, e, digest in rows if isinstance(e, Event)]
    return from_events([sid] * len(events), [r[0] for r in events],
                       b"".join(r[2] for r in events),
                       [content_digest(r[1]) for r in events],
                       [r[1] for r in events],
                       [(sid, offset, reason) for offset, reason, _ in rows
                        if isinstance(reason, str)])


def _collect_steps(rows: list[tuple[int, Event, bytes]], source: Source, spec: RollupSpec,
                   states: dict[int, PartitionState],
                   steps: dict[int, list[tuple[Source, int, int, Event]]]) -> None:
    for offset, event, _ in rows:
        step = spec.funnel.index(event.label) if event.event_type == "funnel_step" else None
        if step is None or event.customer_id is None:
            continue
        j = journey_partition(event.tenant_id, event.campaign_id, event.customer_id,
                              spec.partitions)
        if j in states:
            steps[j].append((source, offset, step, event))


def _first_copies(rows: list[tuple[Source, int, int, Event]]
                  ) -> list[tuple[str, str | None, str, int, int]]:
    """The steps of the first copy of each (tenant, id) by (partition, offset)."""
    first: dict[tuple[str, str], tuple[tuple[int, int], int, Event]] = {}
    for (_, partition), offset, step, event in rows:
        key = (event.tenant_id, event.id)
        kept = first.get(key)
        if kept is None or (partition, offset) < kept[0]:
            first[key] = ((partition, offset), step, event)
    return [(e.tenant_id, e.campaign_id, e.customer_id or "", step, e.occurred_us)
            for _, step, e in first.values()]
