"""What the API holds in memory of a tenant's summaries (`api.summaries`).

Held, because a dashboard asks again and again: a tenant's summed rows (a few rows per
hour and campaign, and per day), its journeys (one row per journey, indexed by campaign
and t1), the first copies of the summarized days whose partial hours a range asks (the
least recently used dropped past `DAY_ROWS_BYTES`), and, only while event files newer
than the generation exist (a running worker always writes some), the id hashes of every
summarized day (8 bytes per event) and what each newer file shares with them, found out
once per file. Everything a new listing no longer names is dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pulse.lakefs import LakeStore
from pulse.rollups import metrics, summaries
from pulse.rollups.summaries import Span

from .summaries import Key, Listing, TenantSummary

Hashes = npt.NDArray[np.uint64]
EDGE_COLUMNS = ["campaign_id", "event_type", "channel", "category", "label", "value",
                "occurred_at"]
"""What measures read of a summarized day's events (its partial hours)."""
DAY_COLUMNS = ["id", "kafka_partition", "kafka_offset", *EDGE_COLUMNS]
"""What deduplicating them reads."""
DAY_ROWS_BYTES = 128 * 2**20
"""Memory for summarized days' events held for their partial hours, per reader."""


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
        """A generation's journeys, indexed, each with its key's hash (`JOURNEY_HASH_SQL`)."""
        with self._lock:
            found = self._journeys.get(key)
        if found is None:
            cursor = self._cursor()
            try:
                cursor.register("stored", self.store.read_table(key[0]))
                table = cursor.sql(f"SELECT *, {summaries.JOURNEY_HASH_SQL} AS jk "
                                   "FROM stored").to_arrow_table()
            finally:
                cursor.close()
            found = Journeys.of(table)
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
        never = pa.scalar(np.iinfo(np.int64).max, pa.int64())
        t1 = table.column("t1").cast(pa.int64()).fill_null(never).to_numpy()
        campaigns = table.column("campaign_id").to_pylist()
        blocks: dict[str | None, tuple[int, int]] = {}
        for i, campaign in enumerate(campaigns):
            start, _ = blocks.get(campaign, (i, i))
            blocks[campaign] = (start, i + 1)
        return Journeys(table, t1, blocks)

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
