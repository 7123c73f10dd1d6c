"""The API's side of the summaries `pulse compact` keeps in the lake.

`rollups.summaries` says what they hold and why an answer from them is the raw lake's
answer. Here: the newest generation of a tenant, taken with each listing of its event
files (`Listing`), so that the two always agree; the plans deciding which hours the
summed rows answer and whether the stored journeys do (`plan_measures`,
`plan_journeys`); and the files they need, held in memory (`Loaded`).

Held in memory, because a dashboard asks again and again: a tenant's summed rows (a few
rows per hour and campaign), its journeys (one row per journey), and, only while event
files newer than the generation exist (a running worker always writes some), the id
hashes of every summarized day (8 bytes per event) and of those newer files, to find an
id that has copies on both sides. Everything a new listing no longer names is dropped.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pulse.lakefs import Entry, LakeStore, summary_folder
from pulse.rollups import metrics, reach, summaries
from pulse.rollups.summaries import Manifest, Span, SummaryDay
from pulse.schemas import lake

Hashes = npt.NDArray[np.uint64]
EDGE_COLUMNS = ["campaign_id", "event_type", "channel", "category", "label", "value",
                "occurred_at"]
"""What measures read of a summarized day's events (its partial hours)."""
DAY_COLUMNS = ["id", "kafka_partition", "kafka_offset", *EDGE_COLUMNS]
"""What deduplicating them reads."""
DAY_ROWS_BYTES = 128 * 2**20
"""Memory for summarized days' events held for their partial hours, per reader."""
Key = tuple[str, int, float]
"""A file as one listing saw it: path, size, modification time."""


@dataclass(frozen=True)
class TenantSummary:
    """A tenant's newest generation that fits the reader's settings."""

    tenant_id: str
    manifest: Manifest
    entries: dict[str, Entry]
    """Every file of the tenant's summaries folder."""
    days: dict[int, SummaryDay]

    def file(self, name: str) -> str:
        return f"{lake.generation_dir(self.tenant_id, self.manifest.generation)}/{name}"

    def keys_file(self, day: SummaryDay) -> str:
        return lake.summary_day_file(self.tenant_id, day.day, day.digest)


def read(store: LakeStore, tenant_id: str, engaged_seconds: float,
         steps: tuple[str, ...]) -> TenantSummary | None:
    """The tenant's newest generation, if it was made under these settings."""
    folder = summary_folder(store, tenant_id)
    found = folder.manifest(store, tenant_id)
    manifest = summaries.decode(found[1]) if found is not None else None
    if manifest is None or not manifest.fits(engaged_seconds, steps):
        return None
    return TenantSummary(tenant_id, manifest, folder.entries, {d.day: d for d in manifest.days})


@dataclass(frozen=True)
class Listing:
    """A tenant's live event files by day, and its summaries, listed together."""

    days: dict[int, list[str]]
    entries: dict[str, Entry]
    """The event files' and summary files' listing entries, by path."""
    summary: TenantSummary | None

    def files(self, days: set[int] | None = None) -> list[str]:
        """The live event files of `days` (all if None)."""
        return [rel for day, rels in sorted(self.days.items())
                if days is None or day in days for rel in rels]

    def key(self, rel: str) -> Key:
        entry = self.entries[rel]
        return rel, entry.size, entry.mtime

    @functools.cached_property
    def summarized(self) -> dict[int, SummaryDay]:
        """The summarized days whose live files are the ones they were computed from."""
        if self.summary is None:
            return {}
        out = {}
        for day, found in self.summary.days.items():
            names = tuple(sorted(rel.rpartition("/")[2] for rel in self.days.get(day, ())))
            if names == found.files:
                out[day] = found
        return out

    @functools.cached_property
    def _fresh(self) -> dict[int, list[str]]:
        out = {}
        for day, rels in self.days.items():
            found = self.summary.days.get(day) if self.summary is not None else None
            named = set(found.files) if found is not None else set()
            mine = [rel for rel in rels if rel.rpartition("/")[2] not in named]
            if mine:
                out[day] = mine
        return out

    def fresh(self, days: set[int] | None = None) -> list[str]:
        """The live event files of `days` (all if None) that no summarized day names."""
        return [rel for day, rels in sorted(self._fresh.items())
                if days is None or day in days for rel in rels]


@dataclass(frozen=True)
class GenerationIds:
    """Every id hash of a generation's days, sorted, with its day; and those of funnel
    steps, sorted."""

    every: Hashes
    days: npt.NDArray[np.int32]
    steps: Hashes


@dataclass(frozen=True)
class Hits:
    """What an event file shares with a generation: the days holding one of its ids, and
    whether a funnel-step id of it is a summarized one too."""

    days: frozenset[int]
    steps: bool


NO_HITS = Hits(frozenset(), False)


def _among(ordered: Hashes, ids: Hashes) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where each of `ids` is or would be in `ordered` (sorted), and whether it is there."""
    at = np.searchsorted(ordered, ids)
    found = at < len(ordered)
    found[found] = ordered[at[found]] == ids[found]
    return at, found


class Loaded:
    """Summary files, and what event files share with them, in memory; `keep` drops
    what the newest listings no longer name."""

    def __init__(self, store: LakeStore, cursor: Callable[[], duckdb.DuckDBPyConnection]
                 ) -> None:
        self.store = store
        self._cursor = cursor
        self._lock = threading.Lock()
        self._tables: dict[Key, pa.Table] = {}
        self._daily: dict[Key, pa.Table] = {}
        self._journeys: dict[Key, Journeys] = {}
        self._day_rows: OrderedDict[tuple[int, tuple[Key, ...]], pa.Table] = OrderedDict()
        self._hits: dict[tuple[Key, int], Hits] = {}
        self._generations: dict[str, tuple[int, GenerationIds]] = {}
        self._named: dict[str, set[str]] = {}
        """Per tenant, the paths its newest listing names."""

    def table(self, key: Key) -> pa.Table:
        """A summary file, sorted by `hour` if it has one."""
        with self._lock:
            found = self._tables.get(key)
        if found is None:
            found = self.store.read_table(key[0])
            if "hour" in found.column_names:
                found = found.sort_by("hour")
            with self._lock:
                self._tables[key] = found
        return found

    def journeys(self, key: Key) -> Journeys:
        """A generation's journeys, indexed."""
        with self._lock:
            found = self._journeys.get(key)
        if found is None:
            found = Journeys.of(self.store.read_table(key[0]))
            with self._lock:
                self._journeys[key] = found
        return found

    def day_rows(self, listing: Listing, day: int) -> pa.Table:
        """A clean summarized day's first copies (`metrics.SPREAD_SQL` says why they stand
        for all of its events), sorted by time: a range's partial hours there are sliced
        out of them instead of read from its files each time. The least recently used go
        first past `DAY_ROWS_BYTES`."""
        key = (day, tuple(listing.key(rel) for rel in listing.days[day]))
        with self._lock:
            found = self._day_rows.get(key)
            if found is not None:
                self._day_rows.move_to_end(key)
        if found is None:
            rows = pa.concat_tables(
                [self.store.read_table(rel, columns=DAY_COLUMNS) for rel in listing.days[day]],
                promote_options="default")
            cursor = self._cursor()
            try:
                cursor.register("day_rows", rows)
                found = cursor.sql(summaries.DAY_ROWS_SQL).to_arrow_table().select(
                    EDGE_COLUMNS).sort_by("occurred_at").combine_chunks()
            finally:
                cursor.close()
            with self._lock:
                self._day_rows[key] = found
                total = sum(t.nbytes for t in self._day_rows.values())
                while total > DAY_ROWS_BYTES and len(self._day_rows) > 1:
                    total -= self._day_rows.popitem(last=False)[1].nbytes
        return found

    def daily(self, key: Key) -> pa.Table:
        """The summed rows of `key` (a generation's), summed again per day: a long range
        reads a few rows per day, not per hour."""
        with self._lock:
            found = self._daily.get(key)
        if found is None:
            cursor = self._cursor()
            try:
                cursor.register("hourly", self.table(key))
                found = cursor.sql(metrics.daily_rows_sql("hourly")).to_arrow_table().sort_by(
                    "hour")
            finally:
                cursor.close()
            with self._lock:
                self._daily[key] = found
        return found

    def hits(self, listing: Listing, rels: list[str]) -> list[Hits]:
        """What each event file of `rels` shares with the listing's generation (each
        file found out once per generation)."""
        summary = listing.summary
        if summary is None or not rels:
            return []
        keys = [(listing.key(rel), summary.manifest.generation) for rel in rels]
        with self._lock:
            known = [self._hits.get(key) for key in keys]
        missing = [rel for rel, found in zip(rels, known, strict=True) if found is None]
        if missing:
            generation = self._ids(listing, summary)
            read = self._file_ids(missing)
            for rel in missing:  # a file without rows shares nothing
                found = self._find(generation, *read[rel]) if rel in read else NO_HITS
                with self._lock:
                    self._hits[(listing.key(rel), summary.manifest.generation)] = found
            with self._lock:
                known = [self._hits.get(key) for key in keys]
        return [found or NO_HITS for found in known]

    def _ids(self, listing: Listing, summary: TenantSummary) -> GenerationIds:
        generation = summary.manifest.generation
        with self._lock:
            found = self._generations.get(summary.tenant_id)
        if found is None or found[0] != generation:
            found = (generation, self._generation_ids(listing, summary))
            with self._lock:
                self._generations[summary.tenant_id] = found
        return found[1]

    def _find(self, generation: GenerationIds, every: Hashes, steps: Hashes) -> Hits:
        at, found = _among(generation.every, every)
        days = set()
        for i in at[found].tolist():  # an id of several days: they lie side by side
            j = i
            while j < len(generation.every) and generation.every[j] == generation.every[i]:
                days.add(int(generation.days[j]))
                j += 1
        return Hits(frozenset(days), bool(_among(generation.steps, steps)[1].any()))

    def _generation_ids(self, listing: Listing, summary: TenantSummary) -> GenerationIds:
        every, days, steps = [], [], []
        for day in summary.manifest.days:
            table = self.store.read_table(summary.keys_file(day), columns=["idh", "funnel"])
            idh = table.column("idh").to_numpy()
            every.append(idh)
            days.append(np.full(len(idh), day.day, np.int32))
            steps.append(idh[table.column("funnel").to_numpy(zero_copy_only=False)])
        all_ids = np.concatenate(every) if every else np.zeros(0, np.uint64)
        order = np.argsort(all_ids, kind="stable")
        all_days = np.concatenate(days) if days else np.zeros(0, np.int32)
        step_ids = np.unique(np.concatenate(steps)) if steps else np.zeros(0, np.uint64)
        return GenerationIds(all_ids[order], all_days[order], step_ids)

    def _file_ids(self, rels: list[str]) -> dict[str, tuple[Hashes, Hashes]]:
        """Each event file's id hashes, and those of its funnel steps: on a folder, all
        in one statement; on an object store, a file at a time."""
        select = f"SELECT {{}}, {summaries.ID_HASH_SQL}, event_type = 'funnel_step' FROM {{}}"
        cursor = self._cursor()
        try:
            if self.store.local:
                rel_of = {self.store.arrow_path(rel): rel for rel in rels}
                rows = cursor.execute(select.format(
                    "filename", "read_parquet($paths, filename = true)"),
                    {"paths": list(rel_of)}).fetchnumpy()
                names, every, step = (np.asarray(v) for v in rows.values())
                paths, of = np.unique(names, return_inverse=True)
                order = np.argsort(of, kind="stable")
                bounds = np.searchsorted(of[order], np.arange(len(paths) + 1))
                out = {}
                for i, path in enumerate(paths.tolist()):
                    mine = order[bounds[i]:bounds[i + 1]]
                    out[rel_of[path]] = (every[mine].astype(np.uint64),
                                         every[mine[step[mine].astype(bool)]].astype(np.uint64))
                return out
            out = {}
            for rel in rels:
                cursor.register("file_ids", self.store.read_table(rel, ["id", "event_type"]))
                _, every, step = (np.asarray(v) for v in cursor.execute(
                    select.format("NULL", "file_ids")).fetchnumpy().values())
                out[rel] = (every.astype(np.uint64),
                            every[step.astype(bool)].astype(np.uint64))
            return out
        finally:
            cursor.close()

    def keep(self, tenant_id: str, listing: Listing) -> None:
        """Drop what the tenant's newest listing (and every other tenant's) no longer
        names: files gone, and generations replaced."""
        generation = listing.summary.manifest.generation if listing.summary else None
        with self._lock:
            self._named[tenant_id] = set(listing.entries)
            named = set().union(*self._named.values())
            for key in [k for k in self._tables if k[0] not in named]:
                del self._tables[key]
                self._daily.pop(key, None)
            for key in [k for k in self._journeys if k[0] not in named]:
                del self._journeys[key]
            for hit in [k for k in self._hits if k[0][0] not in named]:
                del self._hits[hit]
            held = self._generations.get(tenant_id)
            if held is not None and held[0] != generation:
                del self._generations[tenant_id]

    def hit_days(self, listing: Listing, fresh: list[str]) -> set[int]:
        """The summarized days holding an id of the `fresh` event files."""
        return set().union(*(hits.days for hits in self.hits(listing, fresh)))

    def hits_steps(self, listing: Listing, fresh: list[str]) -> bool:
        """Whether a funnel-step id of the `fresh` event files is a summarized one."""
        return any(hits.steps for hits in self.hits(listing, fresh))


# ---- measures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuresPlan:
    rest: list[Span]
    """What the events answer (the rest the summed rows answer)."""
    files: list[str]
    """The event files of `rest` in days not summarized."""
    edges: pa.Table | None = None
    """The events of `rest` in summarized days (a range's partial hours there), already
    deduplicated, with no id among `files`' (`plan_measures` made sure)."""
    summed: pa.Table | None = None
    """The summed rows answering the rest of the range."""


def plan_measures(listing: Listing, ranges: list[Span], loaded: Loaded,
                  by_day: bool) -> MeasuresPlan:
    """What answers `ranges`: summed rows for the whole hours of usable days (see the
    module doc of `rollups.summaries`), per day where a whole day is asked and `by_day`
    (the group needs no finer time), and the events for the rest."""
    scope = summaries.days_of(ranges)
    usable = {day for day in scope if (found := listing.summarized.get(day)) is not None
              and found.clean}
    if usable:
        usable -= loaded.hit_days(listing, listing.fresh(scope - usable))
    days, hours, rest = summaries.split(ranges, usable)
    if listing.summary is None or not (days or hours):
        return MeasuresPlan(list(ranges), listing.files(scope))
    key = listing.key(listing.summary.file(summaries.MEASURES_FILE))
    if not by_day:
        days, hours = [], sorted(days + hours)
    summed = pa.concat_tables([_slice(loaded.daily(key), "hour", days),
                               _slice(loaded.table(key), "hour", hours)])
    touched = summaries.days_of(rest)
    edges = [_slice(loaded.day_rows(listing, day), "occurred_at", rest)
             for day in sorted(touched & usable)]
    return MeasuresPlan(rest, listing.files(touched - usable),
                        pa.concat_tables(edges) if edges else None, summed)


def _slice(table: pa.Table, column: str, spans: list[Span]) -> pa.Table:
    """The rows of `table` (sorted by the µs or timestamp `column`) inside `spans`."""
    keys = table.column(column).cast(pa.int64()).to_numpy()
    parts = [table.slice(lo, hi - lo) for a, b in spans
             for lo, hi in [np.searchsorted(keys, [a, b]).tolist()] if hi > lo]
    return pa.concat_tables(parts) if parts else table.slice(0, 0)


# ---- journeys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JourneysPlan:
    files: list[str]
    """The event files newer than the generation, read raw."""
    journeys: pa.Table
    conflicts: pa.Table


def plan_journeys(listing: Listing, loaded: Loaded, campaign: str | None,
                  t1: Span | None) -> JourneysPlan | None:
    """The stored journeys (those of `campaign` if not None, and those with t1 in `t1` if
    nothing is merged into them) and what to merge into them; None when they cannot
    answer (no generation, or an event file newer than it holds a funnel step of a
    summarized id)."""
    summary = listing.summary
    if summary is None:
        return None
    fresh = listing.fresh()
    if loaded.hits_steps(listing, fresh):
        return None
    conflicts = loaded.table(listing.key(summary.file(summaries.CONFLICTS_FILE)))
    journeys = loaded.journeys(listing.key(summary.file(summaries.JOURNEYS_FILE)))
    # A merge may move a stored journey's t1 into the range: then all of them stay.
    return JourneysPlan(fresh, journeys.rows(campaign, None if fresh or conflicts.num_rows
                                             else t1), conflicts)


@dataclass(frozen=True)
class Journeys:
    """A generation's journeys (sorted by campaign, nulls first, then t1, nulls last),
    and where each campaign's lie, to hand a statement only the rows it reads."""

    table: pa.Table
    t1: npt.NDArray[np.int64]
    """t1 in µs, nulls (no S1 yet) after every time."""
    blocks: dict[str | None, tuple[int, int]]

    @staticmethod
    def of(table: pa.Table) -> Journeys:
        t1 = pc.fill_null(table.column("t1").cast(pa.int64()), np.iinfo(np.int64).max)
        campaigns = table.column("campaign_id").to_pylist()
        blocks: dict[str | None, tuple[int, int]] = {}
        for i, campaign in enumerate(campaigns):
            start, _ = blocks.get(campaign, (i, i))
            blocks[campaign] = (start, i + 1)
        return Journeys(table, t1.to_numpy(), blocks)

    def rows(self, campaign: str | None, t1: Span | None) -> pa.Table:
        """The journeys of `campaign` (every one's if None) with t1 in `t1` (any t1 and
        none, if None)."""
        parts = []
        for found, (start, end) in self.blocks.items():
            if campaign is not None and found != campaign:
                continue
            if t1 is not None:
                start, end = (start + int(i) for i in np.searchsorted(self.t1[start:end], t1))
            parts.append(self.table.slice(start, end - start))
        return pa.concat_tables(parts) if parts else self.table.slice(0, 0)


JOURNEYS, CONFLICTS, SOURCE, EDGES = ("summary_journeys", "summary_conflicts", "lake_files",
                                      "lake_edges")
"""The relations statements read: registered tables, and the event files (`SOURCE`)."""
_SAME = "s.customer_id = f.customer_id AND s.campaign_id IS NOT DISTINCT FROM f.campaign_id"


def journeys_sql(plan: JourneysPlan, steps: tuple[str, ...], options: reach.FunnelOptions,
                 campaign: bool) -> tuple[str, str, dict[str, object]]:
    """(a WITH clause, a relation of every journey with S1 as `reach.journeys_sql` gives
    it, their parameters), from the stored step times merged with those of the fresh
    events and the conflicts, each deduplicated as the raw path does (`campaign`: filter
    on `$campaign` first, as it does)."""
    n = len(steps)
    lists = options.order == "sequence"
    where = " AND campaign_id = $campaign" if campaign else ""
    stored = f"SELECT * FROM {JOURNEYS} WHERE TRUE{where}"
    if not plan.files and not plan.conflicts.num_rows:
        relation, params = reach.reached_sql(n, options, "times")
        return f"WITH times AS ({stored})", relation, params
    columns = ("id, kafka_partition, kafka_offset, campaign_id, customer_id, event_type, "
               "label, occurred_at")
    parts = [f"SELECT {columns} FROM {CONFLICTS}"]
    if plan.files:
        parts.append(f"SELECT {columns} FROM {SOURCE} WHERE event_type = 'funnel_step'")
    copies = metrics.first_copies_sql(
        f"({' UNION ALL '.join(parts)})", "campaign_id, customer_id, event_type, label, "
        "occurred_at", f"TRUE{where}", key="id")
    both = (f"(SELECT s.* FROM stored s SEMI JOIN fresh f ON {_SAME} "
            f"UNION ALL BY NAME SELECT * FROM fresh)")
    prefix = f"""
WITH events AS MATERIALIZED ({copies}),
fresh AS MATERIALIZED ({reach.step_times_sql(steps, lists)}),
stored AS ({stored}),
times AS (
    SELECT s.* FROM stored s ANTI JOIN fresh f ON {_SAME}
    UNION ALL BY NAME ({reach.merge_step_times_sql(n, both, lists)})
)"""
    relation, params = reach.reached_sql(n, options, "times")
    return prefix, relation, {**reach.step_params(steps), **params}


def bound(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The `params` that `sql` names (DuckDB refuses any other)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}
