"""DuckDB over the Parquet lake, one tenant at a time, answering in `Measures`.

Queries read only the files of the tenant asked for, and only the date folders a range
touches (the funnel reads all of a tenant's dates, because a journey's first step may
lie anywhere in time). Files superseded by a compaction are left out by name, tenant
ids reach the file system only after validation, and every value reaches DuckDB as a
bound parameter. Queries run on a small thread pool, each under a time limit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb

from pulse.rollups import metrics
from pulse.rollups.metrics import Measures
from pulse.rollups.windows import DAY_US
from pulse.schemas import lake
from pulse.settings import TENANT_ID_PATTERN

log = logging.getLogger("pulse.lake")

_TENANT = re.compile(TENANT_ID_PATTERN)
_MEASURED = "campaign_id, event_type, channel, category, label, value, occurred_at"
"""What the measures read of each event (materialized once per statement)."""
_JOURNEY = "campaign_id, customer_id, event_type, label, occurred_at"
"""What the funnel reads of each event."""


class LakeUnreadable(Exception):
    """A lake file could not be read; `detail` names it (for admins only)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LakeTimeout(Exception):
    pass


class LakeBusy(Exception):
    """The tenant already has its share of lake queries running."""


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
    """How an answer is split: one total, per campaign, or per time bucket."""

    kind: str
    width_us: int = 0

    def sql(self, column: str) -> str:
        if self.kind == "total":
            return "NULL"
        if self.kind == "campaign":
            return "campaign_id"
        return metrics.bucket_sql(column, self.width_us)


TOTAL = Group("total")
BY_CAMPAIGN = Group("campaign")


def by_bucket(width_us: int) -> Group:
    return Group("bucket", width_us)


class LakeReader:
    def __init__(self, root: str, engaged_seconds: float, steps: tuple[str, ...],
                 threads: int = 4, timeout: float = 30.0, per_tenant: int = 2) -> None:
        self.root = root
        self.engaged_seconds = engaged_seconds
        self.steps = steps
        self.timeout = timeout
        self._db = duckdb.connect(config={"threads": 2})
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lake")
        self.slots = TenantSlots(per_tenant)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._db.close()

    # ---- what to read --------------------------------------------------------------

    def files(self, tenant_id: str, days: tuple[int, int] | None) -> list[str]:
        """Live event files of one tenant, in date folders days[0]..days[1] (all if None)."""
        if not _TENANT.fullmatch(tenant_id):
            raise ValueError(f"not a tenant id: {tenant_id!r}")
        return [path for day, folder in lake.tenant_folders(self.root, tenant_id)
                if days is None or days[0] <= day <= days[1]
                for path in lake.live_paths(folder)]

    def tenants(self) -> list[str]:
        return lake.tenants(self.root)

    # ---- questions -----------------------------------------------------------------

    async def measures(self, tenant_id: str, campaign: str | None,
                       ranges: list[tuple[int, int]], group: Group) -> dict[Any, Measures]:
        """Measures (without the funnel) of events in `ranges`, split by `group`.

        `campaign` None means every event of the tenant, campaign or not.
        """
        if not ranges:
            return {}
        days = (min(a for a, _ in ranges) // DAY_US, (max(b for _, b in ranges) - 1) // DAY_US)
        where, params = _time_filter(ranges, "occurred_at")
        if campaign is not None:
            where += " AND campaign_id = $campaign"
            params["campaign"] = campaign
        g = group.sql("occurred_at")
        # One statement, so the files are read and deduplicated once for all three parts.
        sql = _events_cte(where, _MEASURED, materialized=True) + f"""
SELECT 0 AS part, g, NULL AS key, events, calls, chats, duration_s, engaged
FROM ({metrics.measures_sql(g, "TRUE")})
UNION ALL SELECT 1, g, label, n, 0, 0, 0.0, 0 FROM ({metrics.intents_sql(g, "TRUE")})
UNION ALL SELECT 2, g, category, 0, 0, 0, amount, 0 FROM ({metrics.usage_sql(g, "TRUE")})"""
        results = await self._run(tenant_id, days, [
            (sql, {**params, "engaged": self.engaged_seconds})])
        out: dict[Any, Measures] = {}
        for part, g_value, key, n, calls, chats, amount, engaged in results[0] if results else []:
            if part == 0:
                m = out.setdefault(g_value, Measures())
                m.events, m.calls, m.chats = n, calls, chats
                m.duration_s, m.engaged = float(amount), engaged
            elif part == 1:
                out.setdefault(g_value, Measures()).intents[key] = n
            else:
                out.setdefault(g_value, Measures()).usage[key] = float(amount)
        return out

    async def funnel(self, tenant_id: str, campaign: str | None,
                     ranges: list[tuple[int, int]], group: Group) -> dict[Any, dict[int, int]]:
        """Journeys whose t1 lies in `ranges`, by `group` of t1 and reached step - 1.

        Reads every date of the tenant: a journey's steps may lie anywhere in time.
        """
        if not ranges:
            return {}
        where = "event_type = 'funnel_step'"
        params: dict[str, Any] = {}
        if campaign is not None:
            where += " AND campaign_id = $campaign"
            params["campaign"] = campaign
        t1_where, time_params = _time_filter(ranges, "t1")
        sql, step_params = metrics.funnel_sql(self.steps, group.sql("t1"), t1_where)
        results = await self._run(tenant_id, None, [
            (_events_cte(where, _JOURNEY) + sql, {**params, **time_params, **step_params})])
        out: dict[Any, dict[int, int]] = {}
        for g_value, reached, n in results[0] if results else []:
            out.setdefault(g_value, {})[reached - 1] = n
        return out

    # ---- running -------------------------------------------------------------------

    async def _run(self, tenant_id: str, days: tuple[int, int] | None,
                   statements: list[tuple[str, dict[str, Any]]]) -> list[list[tuple]] | None:
        """Run `statements` over the tenant's files of `days`; None when there are none."""
        async with self.slots(tenant_id):
            return await self._run_listed(tenant_id, days, statements)

    async def _run_listed(self, tenant_id: str, days: tuple[int, int] | None,
                          statements: list[tuple[str, dict[str, Any]]]) -> list[list[tuple]] | None:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            files = self.files(tenant_id, days)
            if not files:
                return None
            bound = [(sql, {**params, "files": files}) for sql, params in statements]
            try:
                return await loop.run_in_executor(self._pool, self._execute, bound)
            except duckdb.IOException as exc:
                # A compaction may delete a file between listing and reading: list again.
                vanished = "No files found" in str(exc) or "No such file" in str(exc)
                if attempt == 2 or not vanished:
                    log.warning("lake read failed: %s", exc)
                    raise LakeUnreadable(str(exc)) from None
        raise AssertionError("unreachable")

    def _execute(self, statements: list[tuple[str, dict[str, Any]]]) -> list[list[tuple]]:
        cursor = self._db.cursor()
        timer = threading.Timer(self.timeout, cursor.interrupt)
        timer.start()
        try:
            return [cursor.execute(sql, params).fetchall() for sql, params in statements]
        except duckdb.InterruptException:
            raise LakeTimeout(f"the lake query took longer than {self.timeout:.0f} s") from None
        except duckdb.InvalidInputException as exc:  # e.g. a corrupt or truncated file
            log.warning("lake read failed: %s", exc)
            raise LakeUnreadable(str(exc)) from None
        finally:
            timer.cancel()
            cursor.close()


def _events_cte(where: str, columns: str, materialized: bool = False) -> str:
    """The relation `events`: one tenant's events of `$files`, one row per event id."""
    body = metrics.first_copies_sql("read_parquet($files)", columns, where, key="id")
    return f"""
WITH events AS {"MATERIALIZED " if materialized else ""}({body})"""


def _time_filter(ranges: Iterable[tuple[int, int]], column: str) -> tuple[str, dict[str, Any]]:
    parts, params = [], {}
    for i, (a, b) in enumerate(ranges):
        parts.append(f"({column} >= $f{i} AND {column} < $t{i})")
        params[f"f{i}"], params[f"t{i}"] = lake.us_to_datetime(a), lake.us_to_datetime(b)
    return "(" + " OR ".join(parts) + ")", params
