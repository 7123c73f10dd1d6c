"""Contract section 3, computed the slow and obvious way, for tests to compare against.

Deliberately independent of `pulse.rollups`: it reads a list of events (in arrival
order) and answers each report by filtering and counting. Times are microseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pulse.schemas.events import Event

HOUR = 3_600_000_000
DAY = 24 * HOUR


def unique(events: Iterable[Event]) -> list[Event]:
    """The first copy of every (tenant_id, id), in arrival order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in events:
        key = (e.tenant_id, e.id)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _in_scope(e: Event, tenant: str, campaign: str | None, use_campaign: bool) -> bool:
    return e.tenant_id == tenant and (not use_campaign or e.campaign_id == campaign)


def _channel(e: Event) -> str:
    if e.channel:
        return e.channel
    return "call" if e.event_type == "call_ended" else "chat"


def conversation_block(events: list[Event], tenant: str, campaign: str | None,
                       use_campaign: bool, frm: int, to: int, engaged_s: float) -> dict:
    convs = [
        e for e in unique(events)
        if _in_scope(e, tenant, campaign, use_campaign)
        and e.event_type in ("call_ended", "chat_ended") and frm <= e.occurred_us < to
    ]
    total = sum(e.value for e in convs)
    engaged = sum(1 for e in convs if e.value >= engaged_s)
    return {
        "conversations": {
            "total": len(convs),
            "calls": sum(1 for e in convs if _channel(e) == "call"),
            "chats": sum(1 for e in convs if _channel(e) == "chat"),
        },
        "engagement": {
            "total_duration_s": float(total),
            "avg_duration_s": _div(total, len(convs)),
            "engaged": engaged,
            "engagement_rate": _div(engaged, len(convs)),
        },
    }


def intent_counts(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                  frm: int, to: int) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for e in unique(events):
        if (_in_scope(e, tenant, campaign, use_campaign) and e.event_type == "intent_detected"
                and frm <= e.occurred_us < to):
            counts[e.label] += 1
    return dict(counts)


def intents_report(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                   frm: int, to: int) -> dict:
    counts = intent_counts(events, tenant, campaign, use_campaign, frm, to)
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "total": total,
        "intents": [{"label": k, "count": n, "share": _div(n, total)} for k, n in ordered],
    }


def journeys(events: list[Event], tenant: str, steps: tuple[str, ...]) -> dict:
    """(campaign, customer) -> (t1 or None, set of steps ever had)."""
    out: dict[tuple[str | None, str], list] = {}
    for e in unique(events):
        if e.tenant_id != tenant or e.event_type != "funnel_step":
            continue
        j = out.setdefault((e.campaign_id, e.customer_id), [None, set()])
        j[1].add(e.label)
        if e.label == steps[0] and (j[0] is None or e.occurred_us < j[0]):
            j[0] = e.occurred_us
    return out


def _reached(labels: set[str], steps: tuple[str, ...]) -> int:
    k = 0
    for step in steps:
        if step not in labels:
            break
        k += 1
    return k


def funnel_report(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                  frm: int, to: int, steps: tuple[str, ...]) -> list[dict]:
    reached = [0] * len(steps)
    for (camp, _customer), (t1, labels) in journeys(events, tenant, steps).items():
        if use_campaign and camp != campaign:
            continue
        if t1 is None or not frm <= t1 < to:
            continue
        for k in range(_reached(labels, steps)):
            reached[k] += 1
    return [
        {
            "step": step,
            "customers": reached[k],
            "conversion_from_previous": _div(reached[k], reached[k - 1] if k else reached[0]),
            "conversion_from_start": _div(reached[k], reached[0]),
        }
        for k, step in enumerate(steps)
    ]


def campaign_overview(events: list[Event], tenant: str, campaign: str, frm: int, to: int,
                      steps: tuple[str, ...], engaged_s: float) -> dict:
    return overview(events, tenant, campaign, True, frm, to, steps, engaged_s)


def overview(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
             frm: int, to: int, steps: tuple[str, ...], engaged_s: float) -> dict:
    block = conversation_block(events, tenant, campaign, use_campaign, frm, to, engaged_s)
    counts = intent_counts(events, tenant, campaign, use_campaign, frm, to)
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        **block,
        "intents": {
            "total": total,
            "intent_rate": _div(total, block["conversations"]["total"]),
            "by_label": {k: {"count": n, "share": _div(n, total)} for k, n in ordered},
        },
        "funnel": funnel_report(events, tenant, campaign, use_campaign, frm, to, steps),
    }


def usage_report(events: list[Event], tenant: str, frm: int, to: int) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for e in unique(events):
        if e.tenant_id == tenant and e.event_type == "usage" and frm <= e.occurred_us < to:
            totals[e.category] += e.value
    return dict(sorted(totals.items()))


def campaigns_report(events: list[Event], tenant: str, frm: int, to: int) -> list[dict]:
    out: dict[str, int] = {}
    for e in unique(events):
        if e.tenant_id == tenant and e.campaign_id is not None and frm <= e.occurred_us < to:
            out.setdefault(e.campaign_id, 0)
            if e.event_type in ("call_ended", "chat_ended"):
                out[e.campaign_id] += 1
    return [{"campaign_id": c, "conversations": n} for c, n in sorted(out.items())]


def timeseries(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
               metric: str, width: int, frm: int, to: int, steps: tuple[str, ...],
               engaged_s: float) -> list[tuple[int, int]]:
    """[(bucket start µs, value)] from the bucket holding `frm` to the last before `to`."""
    first = frm - frm % width
    points = []
    for start in range(first, to, width):
        lo, hi = max(start, frm), min(start + width, to)
        if metric == "funnel_entries":
            value = funnel_report(events, tenant, campaign, use_campaign, lo, hi, steps)[0][
                "customers"
            ]
        elif metric == "conversations":
            value = conversation_block(events, tenant, campaign, use_campaign, lo, hi,
                                       engaged_s)["conversations"]["total"]
        elif metric == "engaged":
            value = conversation_block(events, tenant, campaign, use_campaign, lo, hi,
                                       engaged_s)["engagement"]["engaged"]
        elif metric == "intents":
            value = sum(intent_counts(events, tenant, campaign, use_campaign, lo, hi).values())
        else:
            label = metric.removeprefix("intent:")
            value = intent_counts(events, tenant, campaign, use_campaign, lo, hi).get(label, 0)
        points.append((start, value))
    return points


def approx_equal(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Deep equality where floats may differ by summation order."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and (
            abs(a - b) <= rel * max(1.0, abs(a), abs(b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(approx_equal(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(approx_equal(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b
