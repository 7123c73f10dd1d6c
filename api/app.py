"""`create_app(settings)`: the Starlette app, assembled from its parts.

Routes come from the endpoint declarations (which also generate `/openapi.json`),
errors from `api.errors`, and the rollup replica and DuckDB open in the lifespan. The
app never imports the Faust app: it reads what the workers publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pulse
from pulse import lakecache
from pulse.lakefs import LakeStore
from pulse.rollups import report
from pulse.rollups.store import RollupStore
from pulse.settings import Settings

from . import models
from .auth import Keys
from .context import Context
from .cursor import Cursors
from .endpoints import admin, health, insights, reports
from .errors import EXCEPTION_HANDLERS, ErrorCode, error_response
from .etag import Answers, conditional
from .lag import LagWatch
from .lake import LakeReader, flushes_reported
from .metrics import ApiMetrics
from .openapi import CAMPAIGN, FROM, FUNNEL_OPTIONS, STEP, TO, Endpoint, Param, document
from .query import Query
from .replica import JournalReplica
from .routing import DirectRouter

access_log = logging.getLogger("pulse.access")

METRIC = Param("metric", report.METRIC_HELP, True)
COMPARE = Param("compare", "`previous`: also answer for the period of the same length just "
                "before [from, to), as `previous`", schema={"type": "string", "enum": ["previous"]})
TZ = Param("tz", "IANA time zone (default UTC) in which buckets are cut and dates in "
           "`from`/`to` are read; points carry its offset",
           schema={"type": "string", "default": "UTC", "minLength": 1, "maxLength": 64})
INTERVAL = Param("interval", "bucket width", schema={"type": "string", "enum": ["hour", "day"]})
OUTCOME = Param("outcome", "the journeys that reached the step, or that reached the one "
                "before and not this one (step 2 or more)", True,
                {"type": "string", "enum": ["reached", "dropped"]})
CUSTOMERS_LIMIT = Param("limit", "journeys per page (checked, then not used, with format=csv)",
                        schema={"type": "integer", "minimum": 1,
                                "maximum": insights.CUSTOMERS_MAX,
                                "default": insights.CUSTOMERS_DEFAULT})
CURSOR = Param("cursor", "`next_cursor` of the previous page (same query, same tenant; "
               "checked, then not used, with format=csv)",
               schema={"type": "string", "minLength": 1})
FORMAT = Param("format", "`csv`: the whole list as CSV instead of a page of JSON; a "
               "campaign or customer id starting with =, +, -, @, tab or CR gets a leading "
               "' so that spreadsheets show it as text, never run it as a formula",
               schema={"type": "string", "enum": ["json", "csv"], "default": "json"})
BY = Param("by", "channel, campaign, or metadata.<key> (one top-level key of the events' "
           "metadata, 1-128 characters)", True,
           {"type": "string", "pattern": r"^(channel|campaign|metadata\.[\s\S]{1,128})$"})
GROUPS_LIMIT = Param("limit", "groups listed; the rest are summed in `other`",
                     schema={"type": "integer", "minimum": 1, "maximum": insights.GROUPS_MAX,
                             "default": insights.GROUPS_DEFAULT})
CAMPAIGN_ID = Param("campaign_id", "the campaign", True,
                    {"type": "string", "minLength": 1, "maxLength": 128}, "path")

ENDPOINTS = [
    Endpoint("/analytics/campaign/{campaign_id}", reports.campaign_overview,
             "Campaign overview: conversations, engagement, intents, funnel",
             models.Overview, (CAMPAIGN_ID, FROM, TO, *FUNNEL_OPTIONS, COMPARE)),
    Endpoint("/analytics/overview", reports.overview,
             "The same overview for all of a tenant's events, or one campaign",
             models.Overview, (FROM, TO, CAMPAIGN, *FUNNEL_OPTIONS, COMPARE)),
    Endpoint("/analytics/intents", reports.intents, "Intent distribution",
             models.Intents, (FROM, TO, CAMPAIGN, COMPARE)),
    Endpoint("/analytics/funnel", reports.funnel, "Journey funnel by first step in range",
             models.Funnel, (FROM, TO, CAMPAIGN, *FUNNEL_OPTIONS)),
    Endpoint("/analytics/timeseries", reports.timeseries, "One metric per hour or day",
             models.Timeseries,
             (METRIC, FROM, TO, INTERVAL, TZ, CAMPAIGN, *FUNNEL_OPTIONS)),
    Endpoint("/analytics/time-to-convert", insights.time_to_convert,
             "Seconds from the first funnel step to each later one: count, mean, lower "
             "median, p90", models.TimeToConvert, (FROM, TO, CAMPAIGN, *FUNNEL_OPTIONS)),
    Endpoint("/analytics/funnel/customers", insights.funnel_customers,
             "The journeys that reached a funnel step or dropped off at it, by entry; paged, "
             "or the whole list as CSV", models.Customers,
             (STEP, OUTCOME, FROM, TO, CAMPAIGN, *FUNNEL_OPTIONS, CUSTOMERS_LIMIT, CURSOR,
              FORMAT), csv=True),
    Endpoint("/analytics/heatmap", insights.heatmap,
             "Conversations and engagement by weekday and hour of local time",
             models.Heatmap, (FROM, TO, CAMPAIGN, TZ)),
    Endpoint("/analytics/breakdown", insights.breakdown,
             "Conversations and engagement by channel, campaign or a metadata key: the top "
             "groups and the rest", models.Breakdown, (BY, FROM, TO, CAMPAIGN, GROUPS_LIMIT)),
    Endpoint("/analytics/campaigns", reports.campaigns, "Campaigns with events in range",
             models.Campaigns, (FROM, TO)),
    Endpoint("/analytics/usage", reports.usage, "Tenant usage by category",
             models.Usage, (FROM, TO, COMPARE)),
    Endpoint("/analytics/me", admin.me, "What this API key may see", models.Me, auth="any"),
    Endpoint("/analytics/tenants", admin.tenants, "Every tenant (admin)", models.Tenants,
             auth="admin"),
    Endpoint("/analytics/status", admin.status, "Pipeline status and accounting (admin)",
             models.Status, auth="admin"),
    Endpoint("/healthz", health.healthz, "Liveness", models.Health, auth="none"),
    Endpoint("/readyz", health.readyz, "Ready once the rollup replica caught up",
             models.Health, auth="none"),
    Endpoint("/metrics", health.metrics, "Prometheus metrics", None, auth="none",
             media_type="text/plain"),
    Endpoint("/openapi.json", health.openapi, "This document", None, auth="none"),
    Endpoint("/", health.index, "The dashboard", None, auth="none", media_type="text/html"),
]


def create_app(settings: Settings, keys: dict[str, str] | None = None,
               insecure: bool = False) -> Starlette:
    """The API; `keys` defaults to PULSE_API_KEYS, and `insecure` turns auth off."""
    store = RollupStore()
    lake_store = LakeStore.open(settings.lake, settings)
    replica = JournalReplica(settings, store, lake_store)
    lake = LakeReader(lake_store, settings.engaged_seconds, settings.funnel_steps,
                      flushes=lambda: flushes_reported(store),
                      cache=lakecache.for_store(lake_store, settings))
    lag = LagWatch(settings)
    if keys is None and not insecure:
        keys = settings.read_api_keys() or {}
    ctx = Context(
        settings=settings,
        keys=Keys(None if insecure else keys),
        store=store,
        replica=replica,
        lake=lake,
        query=Query(store, lake, settings.partitions),
        metrics=ApiMetrics(store, replica, lag, settings.partitions),
        lag=lag,
        cursors=Cursors(settings.read_cursor_secret()),
    )

    requests = AccessLog(access_log)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await replica.start()
        await lag.start()
        writer = asyncio.create_task(requests.run())
        try:
            yield
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await lag.stop()
            await replica.stop()
            lake.close()

    answers = Answers(ctx)
    routes: list[Route | Mount] = [
        Route(e.path, conditional(e.handler, answers) if e.auth == "tenant" else e.handler,
              name=e.path)
        for e in ENDPOINTS]
    assets = os.path.join(health.STATIC, "assets")
    if os.path.isdir(assets):
        routes.append(Mount("/assets", StaticFiles(directory=assets), name="assets"))
    app = Starlette(
        middleware=[Middleware(Observe, ctx=ctx, log=requests), Middleware(Limits)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    # Starlette builds its own Router; its middleware stack is built around
    # `app.router` at the first request, so this one is used from the start.
    app.router = DirectRouter(routes, lifespan=lifespan)
    app.state.pulse = ctx
    app.state.openapi = document(ENDPOINTS, pulse.__version__, len(settings.funnel_steps))
    return app


MAX_QUERY_BYTES = 4096
MAX_HEADER_BYTES = 16 * 1024


class Limits:
    """Refuse oversized query strings (414) and headers (431) before any work is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = None
            if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
                problem = (414, ErrorCode.URI_TOO_LONG, f"the query string is limited to "
                           f"{MAX_QUERY_BYTES} bytes")
            elif sum(map(len, chain.from_iterable(scope["headers"]))) > MAX_HEADER_BYTES:
                problem = (431, ErrorCode.HEADERS_TOO_LARGE, f"request headers are limited to "
                           f"{MAX_HEADER_BYTES} bytes")
            if problem is not None:
                await error_response(*problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Observe:
    """The request metrics and the access-log line of every request."""

    def __init__(self, app: ASGIApp, ctx: Context, log: AccessLog) -> None:
        self.app = app
        self.ctx = ctx
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            elapsed = time.perf_counter() - started
            self.ctx.metrics.requests.observe(_route_name(scope), status, elapsed)
            self.log.add(scope, status, elapsed)


class AccessLog:
    """One line per request (`key` and `cursor` values masked), written in batches.

    A `logging` record per request cost a fifth of a rollup-backed answer: the record,
    its formatting and a write to stderr each time. Here a request only appends what
    its line says; `run` formats the lines every `FLUSH_SECONDS` and hands them to the
    logger as one record, so its level, handlers and format still decide where they go
    (`PULSE_LOG_LEVEL=warning` drops them). Each line carries its own time.
    """

    FLUSH_SECONDS = 0.25
    PENDING_MAX = 8192
    """Lines waiting past which a request writes them itself (no writer task running)."""
    CHUNK = 256
    """Lines formatted and written between two turns of the event loop: a quarter
    second's 3,400 lines at once (13.6 k req/s) held every request for ~6 ms."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._pending: list[tuple[float, Any, str, str, bytes, int, float]] = []
        self._queries: dict[bytes, str] = {}
        """Query strings as logged, masked: dashboards send the same ones again and again."""
        self._second = (0, "")

    def add(self, scope: Scope, status: int, elapsed: float) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self._pending.append((time.time(), scope.get("client"), scope["method"],
                                  scope["path"], scope["query_string"], status, elapsed))
            if len(self._pending) >= self.PENDING_MAX:
                self.flush()

    async def run(self) -> None:
        """Write the lines every `FLUSH_SECONDS`, and the last ones when cancelled."""
        batch: list[tuple[float, Any, str, str, bytes, int, float]] = []
        written = 0
        try:
            while True:
                await asyncio.sleep(self.FLUSH_SECONDS)
                batch, self._pending, written = self._pending, [], 0
                while written < len(batch):
                    self._write(batch[written:written + self.CHUNK])
                    written += self.CHUNK
                    await asyncio.sleep(0)
        finally:
            self._write(batch[written:])
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._write(pending)

    def _write(self, pending: list[tuple[float, Any, str, str, bytes, int, float]]) -> None:
        if pending:
            lines = [f'{self._time(at)} {client[0] if client else "-"} "{method} {path}'
                     f'{self._query(query)}" {status} {elapsed * 1000:.1f}ms'
                     for at, client, method, path, query, status, elapsed in pending]
            self.logger.info("%d requests\n  %s", len(lines), "\n  ".join(lines))

    def _time(self, at: float) -> str:
        """UTC, to the millisecond; the whole seconds formatted once each."""
        second = int(at)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int((at - second) * 1000):03d}Z"

    def _query(self, raw: bytes) -> str:
        logged = self._queries.get(raw)
        if logged is None:
            if len(self._queries) >= 1024:
                self._queries.clear()
            logged = self._queries[raw] = _logged_query(raw)
        return logged


_MASKED = ("key", "cursor")
"""Logged as ***: API keys, and page cursors (they hold a customer id)."""


def _logged_query(raw: bytes) -> str:
    """The query string as logged, with `key` and `cursor` masked."""
    query = raw.decode("latin-1")
    lowered = query.lower()
    if "%" in query or any(name in lowered for name in _MASKED):  # perhaps percent-encoded
        query = "&".join(f"{k}={'***' if k in _MASKED else v}"
                         for k, v in parse_qsl(query, keep_blank_values=True))
    return f"?{query}" if query else ""


def _route_name(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
