"""Insight reports: time to convert, the customers at a funnel step, heatmap, breakdown.

Like `reports`, each handler checks the key, parses its parameters, asks `api.query`
and shapes the body with `rollups.report`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups import report

from .. import models, params
from ..cursor import Page, query_digest
from ..etag import answered
from .reports import common, common_tz, respond

CUSTOMERS_MAX = 1000
CUSTOMERS_DEFAULT = 100
GROUPS_MAX = 100
GROUPS_DEFAULT = 25


async def time_to_convert(request: Request) -> Response:
    ctx, tenant, r = common(request)
    campaign = params.parse_campaign(request)
    options = params.parse_funnel_options(request)
    answer = await ctx.query.time_to_convert(tenant, campaign, r, options)
    return respond(request, models.TimeToConvert, tenant, r, campaign, answer,
                   report.time_to_convert(answer.value, ctx.settings.funnel_steps))


async def funnel_customers(request: Request) -> Response:
    """The journeys that reached a step, or dropped off at it: paged, or all as CSV."""
    ctx, tenant, r = common(request)
    campaign = params.parse_campaign(request)
    options = params.parse_funnel_options(request)
    step = params.parse_step(request, len(ctx.settings.funnel_steps))
    outcome = params.parse_outcome(request, step)
    as_csv = params.parse_format(request) == "csv"
    query = query_digest(r.from_us, r.to_us, campaign, step, outcome, options.order,
                         options.window_s)
    # Checked in both forms, so a mistyped one is a 400 rather than silently dropped;
    # the CSV then holds the whole list whatever they say.
    limit = params.parse_limit(request, CUSTOMERS_MAX, CUSTOMERS_DEFAULT)
    cursor = params.query(request).get("cursor") or None
    page = None if cursor is None else ctx.cursors.read(tenant, query, cursor)
    if as_csv:
        answer = await ctx.query.customers(tenant, campaign, r, options, outcome, step, None,
                                           None)
        ctx.metrics.answered(answer.source)
        answered(request, answer.source, answer.as_of)
        name = f"customers-step{step}-{outcome}.csv"
        rows = [report.Customer(None if c is None else spreadsheet_text(c),
                                spreadsheet_text(u), params.iso(t1), k)
                for c, u, t1, k in answer.value[0]]
        return Response(report.customers_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    answer = await ctx.query.customers(tenant, campaign, r, options, outcome, step, page,
                                       limit + 1)
    rows, snapshot = answer.value
    customers = [report.Customer(c, u, params.iso(t1), k) for c, u, t1, k in rows]
    next_cursor = None
    if len(rows) > limit:
        customers = customers[:limit]
        campaign_id, customer_id, t1_us, _ = rows[limit - 1]
        next_cursor = ctx.cursors.issue(tenant, query, Page(t1_us, campaign_id, customer_id,
                                                            snapshot, answer.as_of))
    return respond(request, models.Customers, tenant, r, campaign, answer, report.CustomersNumbers(
        step=step, outcome=outcome, customers=customers, next_cursor=next_cursor))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP, CSV
Injection)."""


def spreadsheet_text(value: str) -> str:
    """`value` as a CSV cell no spreadsheet runs: ids are the producers' free text, and
    an owner opens the export in Excel or Sheets, where `=HYPERLINK(...)` would be a live
    formula. OWASP's remedy: a leading single quote, which spreadsheets read as "this is
    text" and do not show."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


async def heatmap(request: Request) -> Response:
    ctx, tenant, r, zone = common_tz(request)
    campaign = params.parse_campaign(request)
    answer = await ctx.query.heatmap(tenant, campaign, r, zone)
    return respond(request, models.Heatmap, tenant, r, campaign, answer,
                   report.heatmap(*answer.value, zone.key))


async def breakdown(request: Request) -> Response:
    ctx, tenant, r = common(request)
    campaign = params.parse_campaign(request)
    by = params.parse_by(request)
    limit = params.parse_limit(request, GROUPS_MAX, GROUPS_DEFAULT)
    answer = await ctx.query.breakdown(tenant, campaign, r, by)
    return respond(request, models.Breakdown, tenant, r, campaign, answer,
                   report.breakdown(answer.value, by, limit))
