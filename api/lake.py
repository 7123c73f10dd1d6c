"""DuckDB over the Parquet lake, one tenant at a time, answering in `Measures`.

Queries read only the files of the tenant asked for, and only the date folders a range
touches (the funnel reads all of a tenant's dates, because a journey's first step may
lie anywhere in time). Files superseded by a compaction are left out by name, tenant
ids reach the file system only after validation, and every value reaches DuckDB as a
bound parameter. Queries run on a small thread pool, each under a time limit.

Files are read through the lake's store (`pulse.lakefs`): DuckDB's own Parquet reader
on a folder; on S3 (DuckDB cannot load httpfs here) the same reader over local copies
of the objects (`pulse.lakecache`, which says why they stay exact), and for files the
cache has no room for, a pyarrow dataset DuckDB scans with filters and projections
pushed down, 2.3x faster than a registered fsspec filesystem over the same objects (40
files of 25 k rows on moto: 0.81-0.93 s vs 1.90-2.17 s).

Listing a tenant's files is one paged listing on S3, which is slow and billed, so it
is cached per tenant until the lake marks in the journal (`flushed_at` of each input
partition) change, and for at most `LISTING_SECONDS`. That stays exact: a worker
reports a flush only after its files are in the lake, and an answer's `as_of` only
claims flushes reported before it was read, all of which a listing taken after their
report holds; files a compaction deleted since are found vanished, and the tenant is
listed again (`pulse.lakefs.retry_vanished`).

Long ranges and funnels read what `pulse compact` summed ahead of time wherever that
gives the very answer the events give (`api.summaries`; `rollups.summaries` says why it
does): a tenant's rows summed per day and hour, and its journeys' step times, taken
with each listing and merged in one statement with the events still read raw (a
range's partial hours, days changed since, files newer than the summaries).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from pulse import lakecache, lakefs
from pulse.lakecache import LakeCache, Local
from pulse.lakefs import LakeStore
from pulse.rollups import metrics, reach
from pulse.rollups.metrics import Measures
from pulse.rollups.store import RollupStore
from pulse.rollups.summaries import days_of
from pulse.schemas import lake
from pulse.schemas.arrow import EVENT_SCHEMA
from pulse.schemas.events import is_tenant_id

from . import summaries
from .cursor import Page, Snapshot
from .errors import LakeTimeout, LakeUnreadable
from .groups import Group
from .slots import TenantSlots
from .snapshots import snapshot, snapshot_files, snapshot_filter
from .summaries import Listing
from .summary_cache import Loaded

log = logging.getLogger("pulse.lake")

_MEASURED = ("campaign_id", "event_type", "channel", "category", "label", "value", "occurred_at")
"""What the measures read of each event (materialized once per statement)."""
_CONVERSED = ("event_type", "channel", "value", "occurred_at")
"""What an answer of conversations only reads of each: the window deduplicating them
carries every column it is given (in DuckDB's profile of the Kolkata daily series,
117 ms of window time with seven columns, 76 ms with the time alone)."""
_JOURNEY = "campaign_id, customer_id, event_type, label, occurred_at"
"""What the funnel reads of each event."""
LISTING_SECONDS = 30.0
"""Longest time a tenant's cached file listing is used."""
SOURCE = summaries.SOURCE
"""The relation every statement reads its files from (set up per statement)."""
SUMMARY = "summed_rows"
"""The relation of the summed rows a statement adds (registered per statement)."""
Keep = Callable[[list[str]], list[str]]
"""Which of a listing's files a statement reads (a page's snapshot, `snapshot_files`)."""
HOUR_TS = "make_timestamp(hour)"
"""A summed row's hour as a timestamp, for the groups' SQL."""


@dataclass
class Prepared:
    """What one run reads and does, decided from a listing: event files (the relation
    `SOURCE`), tables registered by name, and statements."""

    files: list[str]
    statements: list[tuple[str, dict[str, Any]]]
    tables: dict[str, pa.Table] = field(default_factory=dict)


Prepare = Callable[[Listing], Prepared | None]


def flushes_reported(store: RollupStore) -> Hashable:
    """What changes whenever the journal reports a new lake flush (see the module doc)."""
    return frozenset((p, mark.flushed_at_us) for info in store.partitions.values()
                     for p, mark in info.lake.items())


class LakeReader:
    def __init__(self, store: LakeStore, engaged_seconds: float, steps: tuple[str, ...],
                 threads: int = 4, timeout: float = 30.0, per_tenant: int = 2,
                 flushes: Callable[[], Hashable] | None = None,
                 cache: LakeCache | None = None, use_summaries: bool = True) -> None:
        """`flushes()` (see `flushes_reported`) lets listings be cached; None: list every
        time. `cache` keeps local copies of an object store's files (see
        `pulse.lakecache`); without it they are read from the store each time.
        `use_summaries`: answer from what `pulse compact` summed (`api.summaries`)
        where it can; off, every answer reads the events (benchmarks compare both)."""
        self.store = store
        self.cache = cache
        self.engaged_seconds = engaged_seconds
        self.steps = steps
        self.timeout = timeout
        self._db = duckdb.connect(config={"threads": 2})
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lake")
        self.slots = TenantSlots(per_tenant)
        self._flushes = flushes
        self._listed: dict[str, tuple[Hashable, float, Listing]] = {}
        self.use_summaries = use_summaries
        self.loaded = Loaded(store, self._db.cursor)
        self.listings = 0
        """Listings made (for tests and metrics: the cache's misses)."""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._db.close()
        if self.cache is not None:
            self.cache.close()

    # ---- what to read --------------------------------------------------------------

    def files(self, tenant_id: str, days: tuple[int, int] | None,
              fresh: bool = False) -> list[str]:
        """Live event files of one tenant, in date folders days[0]..days[1] (all if None),
        relative to the lake root; `fresh` lists again whatever the cache holds."""
        listing = self.listing(tenant_id, fresh)
        return listing.files(None if days is None else set(range(days[0], days[1] + 1)))

    def listing(self, tenant_id: str, fresh: bool = False) -> Listing:
        """The tenant's live event files by day, each file's listing entry (the store
        need not be asked a size again, and the cache knows which copy is that file's),
        and its summaries; `fresh` lists again whatever the cache holds."""
        if not is_tenant_id(tenant_id):
            raise ValueError(f"not a tenant id: {tenant_id!r}")
        token = self._flushes() if self._flushes is not None else None
        cached = self._listed.get(tenant_id)
        now = time.monotonic()
        if (fresh or token is None or cached is None or cached[0] != token
                or now - cached[1] > LISTING_SECONDS):
            self.listings += 1
            by_day: dict[int, list[str]] = {}
            found: dict[str, lakefs.Entry] = {}
            for folder, entries in lakefs.lake_dirs(self.store,
                                                    lake.tenant_dir(tenant_id)).items():
                found.update((folder.file(e.name), e) for e in entries)
                by_day.setdefault(folder.day, []).extend(lakefs.live(folder, entries))
            summary = None
            if self.use_summaries:
                summary = summaries.read(self.store, tenant_id, self.engaged_seconds,
                                         self.steps)
                if summary is not None:
                    found.update(summary.entries)
            cached = (token, now, Listing(by_day, found, summary))
            self.loaded.keep(tenant_id, cached[2])
            if token is not None:
                self._listed[tenant_id] = cached
        return cached[2]

    def tenants(self) -> list[str]:
        return lakefs.tenants(self.store)

    # ---- questions -----------------------------------------------------------------

    async def measures(self, tenant_id: str, campaign: str | None,
                       ranges: list[tuple[int, int]], group: Group) -> dict[Any, Measures]:
        """Measures (without the funnel) of events in `ranges`, split by `group`.

        `campaign` None means every event of the tenant, campaign or not.
        """
        return await self._measured(tenant_id, campaign, ranges, group, "TRUE",
                                    _columns(_MEASURED, group), metrics.MEASURE_NAMES, "TRUE")

    async def _measured(self, tenant_id: str, campaign: str | None,
                        ranges: list[tuple[int, int]], group: Group, where: str,
                        columns: str, names: tuple[str, ...], summed_where: str
                        ) -> dict[Any, Measures]:
        """The measures `names` of the events in `ranges` matching `where` (columns
        `columns` read), split by `group`: one statement, adding the summed rows matching
        `summed_where` (the same events) for the whole days and hours they may answer
        (`api.summaries`) to the events read for the rest."""
        if not ranges:
            return {}

        def prepare(listing: Listing) -> Prepared | None:
            if self.use_summaries and group.by_hour:
                plan = summaries.plan_measures(listing, ranges, self.loaded,
                                               group.kind in ("total", "campaign"))
            else:
                plan = summaries.MeasuresPlan(ranges, listing.files(days_of(ranges)))
            params: dict[str, Any] = {**group.params, "engaged": self.engaged_seconds,
                                      "campaign": campaign}
            sql, raw_group, summed_group = "", None, None
            tables: dict[str, pa.Table] = {}
            if plan.files or plan.edges is not None:
                raw_where, time_params = _event_filter(plan.rest, campaign)
                params.update(time_params)
                parts = []
                if plan.files:
                    parts.append(metrics.first_copies_sql(SOURCE, columns,
                                                          f"{raw_where} AND {where}", key="id"))
                if plan.edges is not None:
                    parts.append(f"SELECT {columns} FROM {summaries.EDGES} "
                                 f"WHERE {raw_where} AND {where}")
                    tables[summaries.EDGES] = plan.edges
                # files are read and deduplicated once for the three parts of the answer
                materialized = "MATERIALIZED " if plan.files else ""
                sql = f"WITH events AS {materialized}({' UNION ALL '.join(parts)})"
                raw_group = group.sql("occurred_at")
            if plan.summed is not None:
                summed_group = group.sql(HOUR_TS)
                tables[SUMMARY] = plan.summed
            if raw_group is None and summed_group is None:
                return None
            summary_where = summed_where
            if campaign is not None:
                summary_where += " AND campaign_id = $campaign"
            sql += metrics.combined_sql(raw_group, "TRUE", summed_group, summary_where, SUMMARY,
                                        names)
            return Prepared(plan.files, [(sql, summaries.bound(sql, params))], tables)

        results = await self._run_prepared(tenant_id, prepare)
        out: dict[Any, Measures] = {}
        for row in results[0] if results else []:
            metrics.set_combined(out, row, names)
        return out

    async def funnel(self, tenant_id: str, campaign: str | None,
                     ranges: list[tuple[int, int]], group: Group,
                     options: reach.FunnelOptions = reach.DEFAULT) -> dict[Any, dict[int, int]]:
        """Journeys whose t1 lies in `ranges`, by `group` of t1 and reached step - 1.

        Reads every date of the tenant: a journey's steps may lie anywhere in time.
        """
        if not ranges:
            return {}
        t1_where, time_params = _time_filter(ranges, "t1")

        def sql(journeys: str) -> str:
            return f"""
SELECT {group.sql("t1")} AS g, reached, count(*) AS n
FROM ({journeys}) AS journeys
WHERE {t1_where}
GROUP BY g, reached"""

        results = await self._journeys(tenant_id, campaign, options, sql, time_params, ranges)
        out: dict[Any, dict[int, int]] = {}
        for g_value, reached, n in results:
            out.setdefault(g_value, {})[reached - 1] = n
        return out

    # ---- running -------------------------------------------------------------------

    async def _run(self, tenant_id: str, days: tuple[int, int] | None,
                   statements: list[tuple[str, dict[str, Any]]],
                   keep: Keep | None = None) -> list[list[tuple]] | None:
        """Run `statements` over the tenant's files of `days` (of each listing, those
        `keep` keeps); None when there are none."""
        def prepare(listing: Listing) -> Prepared | None:
            span = None if days is None else set(range(days[0], days[1] + 1))
            files = listing.files(span)
            if keep is not None:
                files = keep(files)
            return Prepared(files, statements) if files else None

        return await self._run_prepared(tenant_id, prepare)

    async def _run_prepared(self, tenant_id: str, prepare: Prepare
                            ) -> list[list[tuple]] | None:
        """Run what `prepare` makes of the tenant's listing (from the cache, then afresh
        if a file vanished), off the loop; None when it makes nothing."""
        attempts = iter((False, True))

        def attempt() -> list[list[tuple]] | None:
            listing = self.listing(tenant_id, fresh=next(attempts))
            prepared = prepare(listing)
            return self._execute(prepared, listing.entries) if prepared is not None else None

        async with self.slots(tenant_id):
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._pool, lambda: lakefs.retry_vanished(2, attempt))
            except (duckdb.IOException, duckdb.InvalidInputException, OSError,
                    pa.ArrowException) as exc:
                # e.g. a corrupt or truncated file, or a file gone twice in a row
                log.warning("lake read failed: %s", exc)
                raise LakeUnreadable(str(exc)) from None

    def _execute(self, prepared: Prepared, entries: dict[str, lakefs.Entry]
                 ) -> list[list[tuple]]:
        started = time.monotonic()
        try:
            with lakecache.reading(self.store, self.cache, prepared.files, entries,
                                   self.timeout) as local:
                cursor = self._db.cursor()
                timer = threading.Timer(self.timeout - (time.monotonic() - started),
                                        cursor.interrupt)
                timer.start()
                try:
                    for name, table in prepared.tables.items():
                        cursor.register(name, table)
                    if prepared.files:
                        self._source(cursor, local, entries)
                    return [cursor.execute(sql, params).fetchall()
                            for sql, params in prepared.statements]
                finally:
                    timer.cancel()
                    cursor.close()
        except (duckdb.InterruptException, lakecache.FetchTimeout):
            raise LakeTimeout(f"the lake query took longer than {self.timeout:.0f} s") from None

    def _source(self, cursor: duckdb.DuckDBPyConnection, local: Local,
                entries: dict[str, lakefs.Entry]) -> None:
        """Make `SOURCE` the rows of `local`'s files on this cursor (see the module doc):
        DuckDB's own Parquet reader over local files, a pyarrow dataset over the rest."""
        parts = []
        if local.paths:
            paths = ", ".join("'" + p.replace("'", "''") + "'" for p in local.paths)
            parts.append(f"SELECT * FROM read_parquet([{paths}])")
        if local.remote:
            sizes = {rel: entries[rel].size for rel in local.remote if rel in entries}
            cursor.register(f"{SOURCE}_remote",
                            self.store.dataset(local.remote, EVENT_SCHEMA, sizes))
            parts.append(f"SELECT * FROM {SOURCE}_remote")
        cursor.execute(f"CREATE OR REPLACE TEMP VIEW {SOURCE} AS "
                       + " UNION ALL BY NAME ".join(parts))

    # ---- journeys (funnel options, time to convert, customers) ----------------------

    async def _journeys(self, tenant_id: str, campaign: str | None,
                        options: reach.FunnelOptions, sql: Callable[[str], str],
                        params: dict[str, Any], ranges: list[tuple[int, int]]) -> list[tuple]:
        """Run `sql(journeys)` (it may go on the WITH clause with `, name AS ...`) where
        `journeys` is every journey of the tenant with S1 (`reach.journeys_sql`; `sql`
        reads those with t1 in `ranges`): from the stored journeys and the funnel steps
        since (`api.summaries`), or else from the tenant's funnel steps of all time."""
        params = {**params, "campaign": campaign}
        t1 = (min(a for a, _ in ranges), max(b for _, b in ranges)) if ranges else None

        def prepare(listing: Listing) -> Prepared | None:
            plan = (summaries.plan_journeys(listing, self.loaded, campaign, t1)
                    if self.use_summaries else None)
            if plan is None:
                files = listing.files()
                where = "event_type = 'funnel_step'"
                if campaign is not None:
                    where += " AND campaign_id = $campaign"
                journeys, step_params = reach.journeys_sql(self.steps, options)
                text = _events_cte(where, _JOURNEY) + sql(journeys)
                return Prepared(files, [(text, summaries.bound(text, {**params, **step_params}))]
                                ) if files else None
            prefix, journeys, step_params = summaries.journeys_sql(
                plan, self.steps, options, campaign is not None)
            text = prefix + sql(journeys)
            tables = {summaries.JOURNEYS: plan.journeys, summaries.CONFLICTS: plan.conflicts}
            if plan.merged is not None:
                tables[summaries.MERGED] = plan.merged
            return Prepared(plan.files, [(text, summaries.bound(text, {**params, **step_params}))],
                            tables)

        results = await self._run_prepared(tenant_id, prepare)
        return results[0] if results else []

    async def time_to_convert(self, tenant_id: str, campaign: str | None,
                              ranges: list[tuple[int, int]],
                              options: reach.FunnelOptions) -> list[reach.Durations]:
        """Steps 2..n: durations from t1 of the journeys with t1 in `ranges` that reached them."""
        t1_where, time_params = _time_filter(ranges, "t1")

        def sql(journeys: str) -> str:
            return f""",
counted AS MATERIALIZED (SELECT * FROM ({journeys}) WHERE {t1_where})
{reach.time_to_convert_sql(len(self.steps), "counted")}"""

        rows = await self._journeys(tenant_id, campaign, options, sql, time_params, ranges)
        found = {step: reach.Durations(n, int(total), median, p90)
                 for step, n, total, median, p90 in rows}
        return [found.get(k, reach.Durations(0, 0, None, None))
                for k in range(2, len(self.steps) + 1)]

    async def customers(self, tenant_id: str, campaign: str | None,
                        ranges: list[tuple[int, int]], options: reach.FunnelOptions,
                        outcome: str, step: int, page: Page | None, limit: int | None,
                        ) -> tuple[list[tuple], Snapshot]:
        """Journeys with t1 in `ranges` that reached `step` (or dropped off at it), after
        `page`'s position in (t1, campaign null first, customer) order, at most `limit`.

        Returns (campaign, customer, t1 µs, reached step) rows and the snapshot they were
        read from, which every later page keeps to: the page's own, or on a first page
        that of the files it read (`snapshot`).
        """
        t1_where, params = _time_filter(ranges, "t1")
        journeys, step_params = reach.journeys_sql(self.steps, options)
        params.update(step_params)
        params["step"] = step
        where = "event_type = 'funnel_step'"
        read: Snapshot = page.snapshot if page is not None else {}

        def keep(files: list[str]) -> list[str]:
            nonlocal read
            if page is not None:
                return snapshot_files(page.snapshot, files)
            read = snapshot(files)
            return files

        if page is not None:
            where += " AND " + snapshot_filter(page.snapshot, params)
        if campaign is not None:
            where += " AND campaign_id = $campaign"
            params["campaign"] = campaign
        after = "TRUE"
        if page is not None:
            after = reach.AFTER_SQL
            params.update(after_t=page.t1_us, after_c=page.campaign_id or "",
                          after_u=page.customer_id)
        sql = _events_cte(where, _JOURNEY) + f"""
SELECT campaign_id, customer_id, epoch_us(t1), reached
FROM ({journeys}) AS journeys
WHERE {t1_where} AND {reach.OUTCOME_SQL[outcome]} AND {after}
ORDER BY {reach.ORDER_SQL}"""
        if limit is not None:
            sql += f"\nLIMIT {int(limit)}"
        results = await self._run(tenant_id, None, [(sql, params)], keep)
        return (results[0] if results else []), read

    async def conversations(self, tenant_id: str, campaign: str | None,
                            ranges: list[tuple[int, int]], group: Group,
                            names: tuple[str, ...] = metrics.CONVERSATION_NAMES,
                            ) -> dict[Any, Measures]:
        """Like `measures`, for conversations only and only the measures `names`: what
        heatmaps, breakdowns and conversation series show."""
        return await self._measured(tenant_id, campaign, ranges, group,
                                    metrics.CONVERSATION_SQL, _columns(_CONVERSED, group), names,
                                    metrics.SUMMED_CONVERSATIONS_SQL)


def _columns(read: tuple[str, ...], group: Group) -> str:
    """The select list of `read` and what `group` reads."""
    return ", ".join(dict.fromkeys((*read, *group.columns)))


def _events_cte(where: str, columns: str) -> str:
    """The relation `events`: one tenant's events of `$files`, one row per event id."""
    body = metrics.first_copies_sql(SOURCE, columns, where, key="id")
    return f"""
WITH events AS ({body})"""


def _event_filter(ranges: list[tuple[int, int]],
                  campaign: str | None) -> tuple[str, dict[str, Any]]:
    """Events in `ranges`, of `campaign` if not None."""
    where, params = _time_filter(ranges, "occurred_at")
    if campaign is not None:
        where += " AND campaign_id = $campaign"
        params["campaign"] = campaign
    return where, params


def _time_filter(ranges: Iterable[tuple[int, int]], column: str,
                 us: str = "") -> tuple[str, dict[str, Any]]:
    """`column` in one of `ranges`; with `us` (a prefix for the parameters' names),
    `column` is microseconds (a summed row's hour), not a timestamp."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for i, (a, b) in enumerate(ranges):
        low, high = f"{us}f{i}", f"{us}t{i}"
        parts.append(f"({column} >= ${low} AND {column} < ${high})")
        if us:
            params[low], params[high] = a, b
        else:
            params[low], params[high] = lake.us_to_datetime(a), lake.us_to_datetime(b)
    return "(" + " OR ".join(parts) + ")", params
