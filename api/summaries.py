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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pulse.lakefs import Entry, LakeStore, summary_folder
from pulse.rollups import metrics, reach, summaries
from pulse.rollups.summaries import Manifest, Span, SummaryDay
from pulse.schemas import lake

Hashes = npt.NDArray[np.uint64]
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


def _found(sorted_ids: Hashes, wanted: Hashes) -> npt.NDArray[np.bool_]:
    """For each of `sorted_ids`, whether it is among `wanted`."""
    if not len(sorted_ids) or not len(wanted):
        return np.zeros(len(sorted_ids), np.bool_)
    return np.isin(sorted_ids, wanted, assume_unique=False)


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
        self._hits: dict[tuple[Key, int], Hits] = {}
        self._generations: dict[str, tuple[int, GenerationIds]] = {}
        self._named: dict[str, set[str]] = {}
        """Per tenant, the paths its newest listing names."""

    def table(self, key: Key) -> pa.Table:
        with self._lock:
            found = self._tables.get(key)
        if found is None:
            found = self.store.read_table(key[0])
            with self._lock:
                self._tables[key] = found
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
                found = cursor.sql(metrics.daily_rows_sql("hourly")).to_arrow_table()
            finally:
                cursor.close()
            with self._lock:
                self._daily[key] = found
        return found

    def hits(self, listing: Listing, rel: str) -> Hits:
        """What the event file `rel` shares with the listing's generation."""
        summary = listing.summary
        if summary is None:
            return NO_HITS
        key = (listing.key(rel), summary.manifest.generation)
        with self._lock:
            found = self._hits.get(key)
        if found is None:
            found = self._find(self._ids(listing, summary), rel)
            with self._lock:
                self._hits[key] = found
        return found

    def _ids(self, listing: Listing, summary: TenantSummary) -> GenerationIds:
        generation = summary.manifest.generation
        with self._lock:
            found = self._generations.get(summary.tenant_id)
        if found is None or found[0] != generation:
            found = (generation, self._generation_ids(listing, summary))
            with self._lock:
                self._generations[summary.tenant_id] = found
        return found[1]

    def _find(self, generation: GenerationIds, rel: str) -> Hits:
        every, steps = self._file_ids(rel)
        at = np.searchsorted(generation.every, every)
        found = at < len(generation.every)
        found[found] = generation.every[at[found]] == every[found]
        days = set()
        for i in at[found].tolist():  # an id of several days: they lie side by side
            j = i
            while j < len(generation.every) and generation.every[j] == generation.every[i]:
                days.add(int(generation.days[j]))
                j += 1
        return Hits(frozenset(days), bool(_found(steps, generation.steps).any()))

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

    def _file_ids(self, rel: str) -> tuple[Hashes, Hashes]:
        """An event file's id hashes, and those of its funnel steps."""
        table = self.store.read_table(rel, columns=["id", "event_type"])
        cursor = self._cursor()
        try:
            cursor.register("file_ids", table)
            rows = cursor.execute(
                f"SELECT {summaries.ID_HASH_SQL}, event_type = 'funnel_step' FROM file_ids"
            ).fetchnumpy()
        finally:
            cursor.close()
        every, step = list(rows.values())
        return np.asarray(every, np.uint64), np.asarray(every[np.asarray(step, bool)], np.uint64)

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
            for hit in [k for k in self._hits if k[0][0] not in named]:
                del self._hits[hit]
            held = self._generations.get(tenant_id)
            if held is not None and held[0] != generation:
                del self._generations[tenant_id]

    def hit_days(self, listing: Listing, fresh: list[str]) -> set[int]:
        """The summarized days holding an id of the `fresh` event files."""
        return set().union(*(self.hits(listing, rel).days for rel in fresh))

    def hits_steps(self, listing: Listing, fresh: list[str]) -> bool:
        """Whether a funnel-step id of the `fresh` event files is a summarized one."""
        return any(self.hits(listing, rel).steps for rel in fresh)


# ---- measures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuresPlan:
    days: list[Span]
    """Whole days the summed rows answer."""
    hours: list[Span]
    """Other whole hours they answer."""
    rest: list[Span]
    """What the events answer."""
    files: list[str]
    """The event files of `rest`."""
    rows: pa.Table | None
    """The summed rows, per hour (None when nothing is summed)."""
    daily: pa.Table | None
    """The same, per day."""


def plan_measures(listing: Listing, ranges: list[Span], loaded: Loaded) -> MeasuresPlan:
    """Which days and hours of `ranges` the summed rows answer (see the module doc of
    `rollups.summaries` for when a day's may)."""
    scope = summaries.days_of(ranges)
    usable = {day for day in scope if (found := listing.summarized.get(day)) is not None
              and found.clean}
    if usable:
        usable -= loaded.hit_days(listing, listing.fresh(scope - usable))
    days, hours, rest = summaries.split(ranges, usable)
    if listing.summary is None or not (days or hours):
        return MeasuresPlan([], [], list(ranges), listing.files(scope), None, None)
    key = listing.key(listing.summary.file(summaries.MEASURES_FILE))
    return MeasuresPlan(days, hours, rest, listing.files(summaries.days_of(rest)),
                        loaded.table(key), loaded.daily(key))


# ---- journeys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JourneysPlan:
    files: list[str]
    """The event files newer than the generation, read raw."""
    journeys: pa.Table
    conflicts: pa.Table


def plan_journeys(listing: Listing, loaded: Loaded) -> JourneysPlan | None:
    """The stored journeys and what to merge into them; None when they cannot answer (no
    generation, or an event file newer than it holds a funnel step of a summarized id)."""
    summary = listing.summary
    if summary is None:
        return None
    fresh = listing.fresh()
    if loaded.hits_steps(listing, fresh):
        return None
    return JourneysPlan(fresh,
                        loaded.table(listing.key(summary.file(summaries.JOURNEYS_FILE))),
                        loaded.table(listing.key(summary.file(summaries.CONFLICTS_FILE))))


JOURNEYS, CONFLICTS, SOURCE = "summary_journeys", "summary_conflicts", "lake_files"
"""The relations a journeys statement reads: registered tables, and the fresh files."""
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
