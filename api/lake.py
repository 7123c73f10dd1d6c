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
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb

from pulse import lakecache, lakefs
from pulse.lakecache import LakeCache, Local
from pulse.lakefs import LakeStore
from pulse.rollups import breakdown, metrics, reach, zones
from pulse.rollups.metrics import Measures
from pulse.rollups.store import RollupStore
from pulse.rollups.windows import DAY_US
from pulse.schemas import lake
from pulse.schemas.arrow import EVENT_SCHEMA
from pulse.settings import TENANT_ID_PATTERN

from .cursor import Page, Snapshot
from .errors import ApiError, ErrorCode, LakeBusy, LakeTimeout, LakeUnreadable

log = logging.getLogger("pulse.lake")

_TENANT = re.compile(TENANT_ID_PATTERN)
_MEASURED = "campaign_id, event_type, channel, category, label, value, occurred_at"
"""What the measures read of each event (materialized once per statement)."""
_JOURNEY = "campaign_id, customer_id, event_type, label, occurred_at"
"""What the funnel reads of each event."""
LISTING_SECONDS = 30.0
"""Longest time a tenant's cached file listing is used."""
SOURCE = "lake_files"
"""The relation every statement reads its files from (set up per statement)."""
Keep = Callable[[list[str]], list[str]]
"""Which of a listing's files a statement reads (a page's snapshot, `_snapshot_files`)."""


class TenantSlots:
    """At most `per_tenant` lake queries per tenant at once, so none can starve others.

    The thread pool bounds the total; this bounds each tenant's part of it. A short
    queue behind the running queries absorbs one dashboard's burst (a page load asks
    for several parts at once); past it the API says no at once (429) rather than
    queueing behind a flood.
    """

    def __init__(self, per_tenant: int, queue: int = 16) -> None:
        self.per_tenant = per_tenant
        self.queue = queue
        self._waiting: dict[str, int] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}

    def __call__(self, tenant_id: str) -> _Slot:
        return _Slot(self, tenant_id)

    def _gate(self, tenant_id: str) -> asyncio.Semaphore:
        gate = self._gates.get(tenant_id)
        if gate is None:
            gate = self._gates[tenant_id] = asyncio.Semaphore(self.per_tenant)
        return gate


class _Slot:
    def __init__(self, slots: TenantSlots, tenant_id: str) -> None:
        self.slots, self.tenant_id = slots, tenant_id

    async def __aenter__(self) -> None:
        slots, tenant = self.slots, self.tenant_id
        gate = slots._gate(tenant)
        if not gate.locked():
            await gate.acquire()
            return
        waiting = slots._waiting.get(tenant, 0)
        if slots.per_tenant <= 0 or waiting >= slots.queue:
            raise LakeBusy(tenant)
        slots._waiting[tenant] = waiting + 1
        try:
            await gate.acquire()
        finally:
            slots._waiting[tenant] -= 1
            if not slots._waiting[tenant]:
                del slots._waiting[tenant]

    async def __aexit__(self, *exc: object) -> None:
        self.slots._gate(self.tenant_id).release()


@dataclass(frozen=True)
class Group:
    """How an answer is split: one total, per campaign, per local time bucket, per
    weekday-hour cell of local time, or per JSON value of a metadata key."""

    kind: str
    buckets: zones.Buckets | None = None
    segments: tuple[zones.Segment, ...] = ()
    """The zone's offsets over the range, for cells."""
    metadata_key: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        if self.metadata_key is None:
            return {}
        return {"metadata_key": breakdown.json_pointer(self.metadata_key)}

    def sql(self, column: str) -> str:
        if self.kind == "total":
            return "NULL"
        if self.kind == "campaign":
            return "campaign_id"
        if self.kind == "metadata":
            return breakdown.METADATA_GROUP_SQL
        if self.kind == "cell":
            return zones.weekday_hour_sql(zones.local_sql(column, list(self.segments)))
        assert self.buckets is not None
        return self.buckets.sql(column)


TOTAL = Group("total")
BY_CAMPAIGN = Group("campaign")


def by_bucket(buckets: zones.Buckets) -> Group:
    return Group("bucket", buckets=buckets)


def by_metadata(key: str) -> Group:
    return Group("metadata", metadata_key=key)


def by_cell(segments: list[zones.Segment]) -> Group:
    """weekday * 24 + hour of local time (Monday = 0)."""
    return Group("cell", segments=tuple(segments))


def flushes_reported(store: RollupStore) -> Hashable:
    """What changes whenever the journal reports a new lake flush (see the module doc)."""
    return frozenset((p, mark.flushed_at_us) for info in store.partitions.values()
                     for p, mark in info.lake.items())


class LakeReader:
    def __init__(self, store: LakeStore, engaged_seconds: float, steps: tuple[str, ...],
                 threads: int = 4, timeout: float = 30.0, per_tenant: int = 2,
                 flushes: Callable[[], Hashable] | None = None,
                 cache: LakeCache | None = None) -> None:
        """`flushes()` (see `flushes_reported`) lets listings be cached; None: list every
        time. `cache` keeps local copies of an object store's files (see
        `pulse.lakecache`); without it they are read from the store each time."""
        self.store = store
        self.cache = cache
        self.engaged_seconds = engaged_seconds
        self.steps = steps
        self.timeout = timeout
        self._db = duckdb.connect(config={"threads": 2})
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lake")
        self.slots = TenantSlots(per_tenant)
        self._flushes = flushes
        self._listed: dict[str, tuple[Hashable, float, list[tuple[int, str]]]] = {}
        self._entries: dict[str, dict[str, lakefs.Entry]] = {}
        """Per tenant, rel -> its entry in the last listing: the store need not be asked
        a file's size again, and the cache knows which copy is that file's."""
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
        if not _TENANT.fullmatch(tenant_id):
            raise ValueError(f"not a tenant id: {tenant_id!r}")
        token = self._flushes() if self._flushes is not None else None
        cached = self._listed.get(tenant_id)
        now = time.monotonic()
        if (fresh or token is None or cached is None or cached[0] != token
                or now - cached[1] > LISTING_SECONDS):
            self.listings += 1
            listing, found = [], {}
            for folder, entries in lakefs.lake_dirs(self.store,
                                                    lake.tenant_dir(tenant_id)).items():
                found.update((folder.file(e.name), e) for e in entries)
                listing += [(folder.day, rel) for rel in lakefs.live(folder, entries)]
            self._entries[tenant_id] = found
            cached = (token, now, listing)
            if token is not None:
                self._listed[tenant_id] = cached
        return [rel for day, rel in cached[2] if days is None or days[0] <= day <= days[1]]

    def tenants(self) -> list[str]:
        return lakefs.tenants(self.store)

    # ---- questions -----------------------------------------------------------------

    async def measures(self, tenant_id: str, campaign: str | None,
                       ranges: list[tuple[int, int]], group: Group) -> dict[Any, Measures]:
        """Measures (without the funnel) of events in `ranges`, split by `group`.

        `campaign` None means every event of the tenant, campaign or not.
        """
        if not ranges:
            return {}
        where, params = _event_filter(ranges, campaign)
        g = group.sql("occurred_at")
        # One statement, so the files are read and deduplicated once for all three parts.
        scalars = ", ".join(metrics.MEASURE_NAMES)
        blanks = ", ".join("NULL" for _ in metrics.MEASURE_NAMES)
        sql = _events_cte(where, _MEASURED, materialized=True) + f"""
SELECT 0 AS part, g, NULL AS key, NULL AS amount, {scalars}
FROM ({metrics.measures_sql(g, "TRUE")})
UNION ALL SELECT 1, g, label, n, {blanks} FROM ({metrics.intents_sql(g, "TRUE")})
UNION ALL SELECT 2, g, category, amount, {blanks} FROM ({metrics.usage_sql(g, "TRUE")})"""
        results = await self._run(tenant_id, _days(ranges), [
            (sql, {**params, **group.params, "engaged": self.engaged_seconds})])
        out: dict[Any, Measures] = {}
        for part, g_value, key, amount, *values in results[0] if results else []:
            m = out.setdefault(g_value, Measures())
            if part == 0:
                metrics.set_scalars(m, values)
            elif part == 1:
                m.intents[key] = int(amount)
            else:
                m.usage[key] = float(amount)
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
        journeys, step_params = reach.journeys_sql(self.steps, options)
        sql = f"""
SELECT {group.sql("t1")} AS g, reached, count(*) AS n
FROM ({journeys}) AS journeys
WHERE {t1_where}
GROUP BY g, reached"""
        results = await self._journeys(tenant_id, campaign, sql, {**time_params, **step_params})
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
        async with self.slots(tenant_id):
            return await self._run_listed(tenant_id, days, statements, keep)

    async def _run_listed(self, tenant_id: str, days: tuple[int, int] | None,
                          statements: list[tuple[str, dict[str, Any]]],
                          keep: Keep | None = None) -> list[list[tuple]] | None:
        """List (from the cache, then afresh if a file vanished) and run, off the loop."""
        attempts = iter((False, True))

        def attempt() -> list[list[tuple]] | None:
            files = self.files(tenant_id, days, fresh=next(attempts))
            if keep is not None:
                files = keep(files)
            entries = self._entries.get(tenant_id, {})
            return self._execute(files, statements, entries) if files else None

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, lambda: lakefs.retry_vanished(2, attempt))
        except (duckdb.IOException, duckdb.InvalidInputException, OSError) as exc:
            # e.g. a corrupt or truncated file, or a file gone twice in a row
            log.warning("lake read failed: %s", exc)
            raise LakeUnreadable(str(exc)) from None

    def _execute(self, files: list[str], statements: list[tuple[str, dict[str, Any]]],
                 entries: dict[str, lakefs.Entry]) -> list[list[tuple]]:
        started = time.monotonic()
        try:
            with lakecache.reading(self.store, self.cache, files, entries,
                                   self.timeout) as local:
                cursor = self._db.cursor()
                timer = threading.Timer(self.timeout - (time.monotonic() - started),
                                        cursor.interrupt)
                timer.start()
                try:
                    self._source(cursor, local, entries)
                    return [cursor.execute(sql, params).fetchall()
                            for sql, params in statements]
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

    async def _journeys(self, tenant_id: str, campaign: str | None, sql: str,
                        params: dict[str, Any]) -> list[tuple]:
        """Run `sql` over the relation `events`: the tenant's funnel steps of all time."""
        where = "event_type = 'funnel_step'"
        if campaign is not None:
            where += " AND campaign_id = $campaign"
            params = {**params, "campaign": campaign}
        results = await self._run(tenant_id, None, [(_events_cte(where, _JOURNEY) + sql,
                                                     params)])
        return results[0] if results else []

    async def time_to_convert(self, tenant_id: str, campaign: str | None,
                              ranges: list[tuple[int, int]],
                              options: reach.FunnelOptions) -> list[reach.Durations]:
        """Steps 2..n: durations from t1 of the journeys with t1 in `ranges` that reached them."""
        t1_where, time_params = _time_filter(ranges, "t1")
        journeys, step_params = reach.journeys_sql(self.steps, options)
        sql = f""",
counted AS MATERIALIZED (SELECT * FROM ({journeys}) WHERE {t1_where})
{reach.time_to_convert_sql(len(self.steps), "counted")}"""
        rows = await self._journeys(tenant_id, campaign, sql, {**time_params, **step_params})
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
                return _snapshot_files(page.snapshot, files)
            read = snapshot(files)
            return files

        if page is not None:
            where += " AND " + _snapshot_filter(page.snapshot, params)
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
        if not ranges:
            return {}
        where, params = _event_filter(ranges, campaign)
        where += f" AND {metrics.CONVERSATION_SQL}"
        columns = _MEASURED
        if group.kind == "metadata":
            columns += ", " + breakdown.METADATA_VALUE_COLUMN
        sql = _events_cte(where, columns) + metrics.measures_sql(group.sql("occurred_at"),
                                                                  "TRUE", names)
        params.update(group.params)
        if "$engaged" in sql:
            params["engaged"] = self.engaged_seconds
        results = await self._run(tenant_id, _days(ranges), [(sql, params)])
        out: dict[Any, Measures] = {}
        for g_value, *values in results[0] if results else []:
            metrics.set_scalars(out.setdefault(g_value, Measures()), tuple(values), names)
        return out

def _events_cte(where: str, columns: str, materialized: bool = False) -> str:
    """The relation `events`: one tenant's events of `$files`, one row per event id."""
    body = metrics.first_copies_sql(SOURCE, columns, where, key="id")
    return f"""
WITH events AS {"MATERIALIZED " if materialized else ""}({body})"""


def _days(ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """The first and last date folder `ranges` touch."""
    return min(a for a, _ in ranges) // DAY_US, (max(b for _, b in ranges) - 1) // DAY_US


def _event_filter(ranges: list[tuple[int, int]],
                  campaign: str | None) -> tuple[str, dict[str, Any]]:
    """Events in `ranges`, of `campaign` if not None."""
    where, params = _time_filter(ranges, "occurred_at")
    if campaign is not None:
        where += " AND campaign_id = $campaign"
        params["campaign"] = campaign
    return where, params


def _time_filter(ranges: Iterable[tuple[int, int]], column: str) -> tuple[str, dict[str, Any]]:
    parts, params = [], {}
    for i, (a, b) in enumerate(ranges):
        parts.append(f"({column} >= $f{i} AND {column} < $t{i})")
        params[f"f{i}"], params[f"t{i}"] = lake.us_to_datetime(a), lake.us_to_datetime(b)
    return "(" + " OR ".join(parts) + ")", params


def snapshot(files: list[str]) -> Snapshot:
    """The highest input offset `files` cover, per epoch and partition: what a list read
    from them holds, for its later pages to keep to (`_snapshot_files`,
    `_snapshot_filter`).

    Within an epoch an input partition's flushes are written one after another, each
    starting past the last, so a row that lands later has a higher offset (or is a
    rewrite of the same row). After a broker restart offsets start again at 0 under a
    new epoch (`pulse.epoch`): an offset means something only with its epoch.
    """
    out: Snapshot = {}
    for rel in files:
        name = lake.parse_name(os.path.basename(rel))
        if name is not None:
            limits = out.setdefault(name.epoch, {})
            limits[name.partition] = max(name.last, limits.get(name.partition, -1))
    return {epoch: dict(sorted(limits.items())) for epoch, limits in sorted(out.items())}


def _snapshot_files(snapshot: Snapshot, files: list[str]) -> list[str]:
    """Those of `files` that hold rows of `snapshot`: of an epoch and partition it names,
    starting at or before its offset there (files of a new epoch, after a broker
    restart, hold none, whatever their offsets).

    Rows carry no epoch, so the rows a kept file holds past the snapshot (a compaction or
    a redone flush that spans its offset) are cut by offset alone (`_snapshot_filter`,
    the highest offset of any epoch of the partition). When another epoch of the same
    partition reaches higher, that cut cannot be made: the list is refused, to be asked
    for again from its first page.
    """
    ceiling = _ceilings(snapshot)
    kept = []
    for rel in files:
        name = lake.parse_name(os.path.basename(rel))
        last = None if name is None else snapshot.get(name.epoch, {}).get(name.partition)
        if name is None or last is None or name.first > last:
            continue
        if name.last > last and ceiling[name.partition] > last:
            raise ApiError(400, ErrorCode.BAD_CURSOR, RENUMBERED)
        kept.append(rel)
    return kept


def _ceilings(snapshot: Snapshot) -> dict[int, int]:
    """Per partition, the highest offset of any epoch in `snapshot`."""
    out: dict[int, int] = {}
    for limits in snapshot.values():
        for partition, last in limits.items():
            out[partition] = max(last, out.get(partition, -1))
    return out


RENUMBERED = ("`cursor`: since its first page the lake was renumbered (the broker restarted) "
              "and rewritten across the cursor's position; ask for the first page again "
              "without it")


def _snapshot_filter(snapshot: Snapshot, params: dict[str, Any]) -> str:
    """Rows of `snapshot` among those of the files `_snapshot_files` keeps: offsets up to
    the highest of any epoch, per partition."""
    cases = []
    for i, (partition, offset) in enumerate(sorted(_ceilings(snapshot).items())):
        params[f"sp{i}"], params[f"so{i}"] = partition, offset
        cases.append(f"WHEN $sp{i} THEN $so{i}")
    if not cases:
        return "FALSE"
    return f"kafka_offset <= CASE kafka_partition {' '.join(cases)} ELSE -1 END"
