"""Tenant reports: overview, campaign, intents, funnel, timeseries, campaigns, usage.

Each handler checks the key, parses its parameters, asks `api.query` and shapes the
body with `rollups.report`, the code that defines every derived number.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups import report, zones
from pulse.rollups.metrics import Measures

from .. import models, params
from ..auth import request_tenant
from ..context import Context, context
from ..errors import ApiError, ErrorCode
from ..etag import answered
from ..query import Answer, combine

_encode = msgspec.json.Encoder().encode


def json_response(body: Any) -> Response:
    """`body` encoded once with msgspec (not Starlette's JSONResponse, which uses `json`)."""
    return Response(_encode(body), media_type="application/json")


def respond(request: Request, model: type[models.Report], tenant: str, r: params.Range,
            campaign: str | None, answer: Answer, numbers: msgspec.Struct,
            previous: tuple[params.Range, Answer, msgspec.Struct] | None = None) -> Response:
    """The answer `model`: its envelope (which `answer` says the sources of), numbers, and
    the previous period's (range, answer, numbers) when it was asked for."""
    parts = [answer] if previous is None else [answer, previous[1]]
    whole = combine(parts, lambda values: None)
    context(request).metrics.answered(whole.source)
    answered(request, whole.source, whole.as_of)
    envelope = {"tenant_id": tenant, "from_": params.iso(r.from_us), "to": params.iso(r.to_us),
                "campaign_id": campaign, "source": whole.source,
                "as_of": None if whole.as_of is None else params.iso(whole.as_of)}
    before = None if previous is None else (params.iso(previous[0].from_us),
                                            params.iso(previous[0].to_us), previous[2])
    return json_response(models.build(model, envelope, numbers, before))


async def with_previous(request: Request, r: params.Range,
                        ask: Callable[[params.Range], Awaitable[Answer]],
                        ) -> tuple[Answer, tuple[params.Range, Answer] | None]:
    """The answer for `r`, and with `compare=previous` the one for the period before."""
    before = params.parse_compare(request, r)
    answer = await ask(r)
    return answer, None if before is None else (before, await ask(before))


def shaped(before: tuple[params.Range, Answer] | None, shape: Callable[[Any], msgspec.Struct],
           ) -> tuple[params.Range, Answer, msgspec.Struct] | None:
    """The previous period's (range, answer, numbers), shaped like the answer's own."""
    return None if before is None else (*before, shape(before[1].value))


def common(request: Request) -> tuple[Context, str, params.Range]:
    """The context, the tenant asked about (the key checked first), and the range."""
    ctx = context(request)
    return ctx, request_tenant(ctx.keys, request), params.parse_range(request)


def common_tz(request: Request) -> tuple[Context, str, params.Range, ZoneInfo]:
    """`common` for answers that take `tz`: dates in `from`/`to` are local midnights."""
    ctx = context(request)
    tenant = request_tenant(ctx.keys, request)
    zone = params.parse_tz(request)
    return ctx, tenant, params.parse_range(request, zone), zone


async def _overview(request: Request, campaign: str | None) -> Response:
    ctx, tenant, r = common(request)
    options = params.parse_funnel_options(request)
    steps = ctx.settings.funnel_steps
    answer, before = await with_previous(request, r, lambda span: ctx.query.total(
        tenant, campaign, span, options=options))
    return respond(request, models.Overview, tenant, r, campaign, answer,
                   report.overview(answer.value, steps),
                   shaped(before, lambda m: report.overview(m, steps)))


async def overview(request: Request) -> Response:
    return await _overview(request, params.parse_campaign(request))


async def campaign_overview(request: Request) -> Response:
    return await _overview(request, params.check_id("campaign_id",
                                                    request.path_params["campaign_id"]))


async def intents(request: Request) -> Response:
    ctx, tenant, r = common(request)
    campaign = params.parse_campaign(request)
    answer, before = await with_previous(request, r, lambda span: ctx.query.total(
        tenant, campaign, span, funnel=False))
    return respond(request, models.Intents, tenant, r, campaign, answer,
                   report.intents(answer.value), shaped(before, report.intents))


async def funnel(request: Request) -> Response:
    ctx, tenant, r = common(request)
    campaign = params.parse_campaign(request)
    options = params.parse_funnel_options(request)
    answer = await ctx.query.total(tenant, campaign, r, measures=False, options=options)
    return respond(request, models.Funnel, tenant, r, campaign, answer, report.FunnelNumbers(
        steps=report.funnel(answer.value, ctx.settings.funnel_steps)))


async def timeseries(request: Request) -> Response:
    ctx, tenant, r, zone = common_tz(request)
    campaign = params.parse_campaign(request)
    metric = params.query(request).get("metric", "")
    try:
        label = report.metric_label(metric)
    except ValueError:
        raise ApiError(400, ErrorCode.BAD_METRIC,
                       f"`metric` must be one of {report.METRIC_HELP}") from None
    if label is not None:
        params.check_id("metric", label)
    # Checked, though no option changes entry, which is all that funnel_entries counts.
    params.parse_funnel_options(request)
    interval = params.parse_interval(request)
    params.check_points(interval, r)
    buckets = zones.buckets(zone, r.from_us, r.to_us, params.INTERVALS[interval])
    answer = await ctx.query.series(tenant, campaign, r, buckets, report.metric_part(metric))
    points = [report.Point(params.iso(start, zone), report.metric_value(metric, m))
              for start, m in answer.value.items()]
    return respond(request, models.Timeseries, tenant, r, campaign, answer,
                   report.TimeseriesNumbers(metric=metric, interval=interval, tz=zone.key,
                                            points=points))


async def campaigns(request: Request) -> Response:
    ctx, tenant, r = common(request)
    answer = await ctx.query.campaigns(tenant, r)
    items = [report.CampaignItem(c, m.conversations) for c, m in sorted(answer.value.items())]
    return respond(request, models.Campaigns, tenant, r, None, answer,
                   report.CampaignsNumbers(campaigns=items))


async def usage(request: Request) -> Response:
    ctx, tenant, r = common(request)
    answer, before = await with_previous(request, r, lambda span: ctx.query.total(
        tenant, None, span, funnel=False))
    return respond(request, models.Usage, tenant, r, None, answer, _usage(answer.value),
                   shaped(before, _usage))


def _usage(m: Measures) -> report.UsageNumbers:
    return report.UsageNumbers(usage=report.usage(m))
