"""Tenant reports: overview, campaign, intents, funnel, timeseries, campaigns, usage.

Each handler checks the key, parses its parameters, asks `api.query` and shapes the
body with `rollups.report`, the code that defines every derived number.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups import report
from pulse.rollups.metrics import Measures

from .. import params
from ..auth import tenant_for
from ..context import Context, context
from ..errors import ApiError
from ..lake import LakeBusy, LakeTimeout, LakeUnreadable
from ..query import Answer

METRICS = ("conversations", "engaged", "intents", "funnel_entries")


def json(body: dict[str, Any]) -> Response:
    return Response(msgspec.json.encode(body), media_type="application/json")


def envelope(ctx: Context, tenant: str, r: params.Range, campaign: str | None,
             answer: Answer) -> dict[str, Any]:
    ctx.metrics.answers.labels(answer.source).inc()
    return {
        "tenant_id": tenant,
        "from": params.iso(r.from_us),
        "to": params.iso(r.to_us),
        "campaign_id": campaign,
        "source": answer.source,
        "as_of": None if answer.as_of is None else params.iso(answer.as_of),
    }


async def _ask(ctx: Context, request: Request, coro: Any) -> Answer:
    """Await a query, turning lake failures into 503s that tell only admins the file."""
    try:
        return await coro
    except LakeUnreadable as exc:
        ctx.metrics.lake_errors.inc()
        admin = ctx.keys.scope(request).admin
        raise ApiError(503, "lake_unreadable",
                       f"the lake cannot be read: {exc.detail}" if admin else
                       "the lake cannot be read right now; an administrator can see why "
                       "in /analytics/status and the server log") from None
    except LakeTimeout as exc:
        ctx.metrics.lake_errors.inc()
        raise ApiError(503, "lake_timeout", f"{exc}; ask for a shorter range") from None
    except LakeBusy:
        raise ApiError(429, "too_many_requests",
                       "this tenant already has lake queries running; retry in a second",
                       headers={"Retry-After": "1"}) from None


def _common(request: Request) -> tuple[Context, str, params.Range]:
    ctx = context(request)
    tenant = tenant_for(ctx.keys.scope(request), request)
    return ctx, tenant, params.parse_range(request)


async def _overview(request: Request, campaign: str | None) -> Response:
    ctx, tenant, r = _common(request)
    answer = await _ask(ctx, request, ctx.query.total(tenant, campaign, r))
    m: Measures = answer.value
    return json({**envelope(ctx, tenant, r, campaign, answer),
                 **report.overview(m, ctx.settings.funnel_steps)})


async def overview(request: Request) -> Response:
    return await _overview(request, params.parse_campaign(request))


async def campaign_overview(request: Request) -> Response:
    return await _overview(request, params.check_id("campaign_id",
                                                    request.path_params["campaign_id"]))


async def intents(request: Request) -> Response:
    ctx, tenant, r = _common(request)
    campaign = params.parse_campaign(request)
    answer = await _ask(ctx, request, ctx.query.total(tenant, campaign, r, funnel=False))
    items = report.intent_list(answer.value)
    return json({**envelope(ctx, tenant, r, campaign, answer),
                 "total": sum(i["count"] for i in items), "intents": items})


async def funnel(request: Request) -> Response:
    ctx, tenant, r = _common(request)
    campaign = params.parse_campaign(request)
    answer = await _ask(ctx, request, ctx.query.total(tenant, campaign, r, measures=False))
    return json({**envelope(ctx, tenant, r, campaign, answer),
                 "steps": report.funnel(answer.value, ctx.settings.funnel_steps)})


async def timeseries(request: Request) -> Response:
    ctx, tenant, r = _common(request)
    campaign = params.parse_campaign(request)
    metric = request.query_params.get("metric", "")
    label = metric.removeprefix("intent:") if metric.startswith("intent:") else None
    if metric not in METRICS and not label:
        raise ApiError(400, "bad_metric", "`metric` must be one of conversations, engaged, "
                       "intents, intent:<label>, funnel_entries")
    if label is not None:
        params.check_id("metric", label)
    interval = params.parse_interval(request)
    params.check_points(interval, r)
    answer = await _ask(ctx, request, ctx.query.series(
        tenant, campaign, r, params.INTERVALS[interval], funnel=metric == "funnel_entries"))
    points = [{"t": params.iso(start), "value": _value(metric, label, m)}
              for start, m in answer.value.items()]
    return json({**envelope(ctx, tenant, r, campaign, answer),
                 "metric": metric, "interval": interval, "points": points})


def _value(metric: str, label: str | None, m: Measures) -> int:
    if label is not None:
        return m.intents.get(label, 0)
    if metric == "conversations":
        return m.conversations
    if metric == "engaged":
        return m.engaged
    if metric == "intents":
        return sum(m.intents.values())
    return sum(m.funnel.values())


async def campaigns(request: Request) -> Response:
    ctx, tenant, r = _common(request)
    answer = await _ask(ctx, request, ctx.query.campaigns(tenant, r))
    items = [{"campaign_id": c, "conversations": m.conversations}
             for c, m in sorted(answer.value.items())]
    return json({**envelope(ctx, tenant, r, None, answer), "campaigns": items})


async def usage(request: Request) -> Response:
    ctx, tenant, r = _common(request)
    answer = await _ask(ctx, request, ctx.query.total(tenant, None, r, funnel=False))
    return json({**envelope(ctx, tenant, r, None, answer), "usage": report.usage(answer.value)})
