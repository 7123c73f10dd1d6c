"""Contract section 3, computed the slow and obvious way, for tests to compare against.

Deliberately independent of `pulse.rollups`: it reads a list of events (in arrival
order) and answers each report by filtering and counting. Times are microseconds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

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


def journey_steps(events: list[Event], tenant: str) -> dict:
    """(campaign, customer) -> {label: [times of its funnel_step events]}."""
    out: dict[tuple[str | None, str], dict[str, list[int]]] = {}
    for e in unique(events):
        if e.tenant_id == tenant and e.event_type == "funnel_step":
            out.setdefault((e.campaign_id, e.customer_id), {}).setdefault(e.label, []).append(
                e.occurred_us)
    return out


def reach(step_times: dict[str, list[int]], steps: tuple[str, ...], order: str) -> list:
    """reach(1..n) of one journey (None where it does not exist)."""
    out: list[int | None] = []
    if order == "any":
        for k in range(1, len(steps) + 1):
            firsts = [min(step_times[s]) if step_times.get(s) else None for s in steps[:k]]
            out.append(None if None in firsts else max(firsts))
        return out
    g: int | None = None
    for j, step in enumerate(steps):
        if j and g is None:
            out.append(None)
            continue
        later = [t for t in step_times.get(step, []) if j == 0 or t >= g]
        g = min(later) if later else None
        out.append(g)
    return out


def has_reached(r: list, k: int, window: int | None) -> bool:
    """Whether a journey with reach times `r` has reached step k (1-based)."""
    return r[k - 1] is not None and (window is None or r[k - 1] - r[0] <= window * 1_000_000)


def counted_journeys(events: list[Event], tenant: str, campaign: str | None,
                     use_campaign: bool, frm: int, to: int, steps: tuple[str, ...],
                     order: str = "any") -> dict:
    """(campaign, customer) -> reach times, of the journeys whose t1 lies in [frm, to)."""
    out = {}
    for key, times in journey_steps(events, tenant).items():
        if use_campaign and key[0] != campaign:
            continue
        r = reach(times, steps, order)
        if r[0] is not None and frm <= r[0] < to:
            out[key] = r
    return out


def funnel_report(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                  frm: int, to: int, steps: tuple[str, ...], order: str = "any",
                  window: int | None = None) -> list[dict]:
    journeys = counted_journeys(events, tenant, campaign, use_campaign, frm, to, steps, order)
    reached = [sum(1 for r in journeys.values() if has_reached(r, k, window))
               for k in range(1, len(steps) + 1)]
    return [
        {
            "step": step,
            "customers": reached[k],
            "conversion_from_previous": _div(reached[k], reached[k - 1] if k else reached[0]),
            "conversion_from_start": _div(reached[k], reached[0]),
        }
        for k, step in enumerate(steps)
    ]


def time_to_convert(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                    frm: int, to: int, steps: tuple[str, ...], order: str = "any",
                    window: int | None = None) -> list[dict]:
    """Steps 2..n: seconds from t1 to reach(k) over the journeys counted at step k."""
    journeys = counted_journeys(events, tenant, campaign, use_campaign, frm, to, steps, order)
    out = []
    for k in range(2, len(steps) + 1):
        seconds = sorted((r[k - 1] - r[0]) / 1_000_000 for r in journeys.values()
                         if has_reached(r, k, window))
        n = len(seconds)
        out.append({
            "step": steps[k - 1], "count": n,
            "mean_s": sum(seconds) / n if n else None,
            "median_s": seconds[(n - 1) // 2] if n else None,
            "p90_s": seconds[math.ceil(Fraction(9, 10) * n) - 1] if n else None,
        })
    return out

def funnel_customers(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
                     frm: int, to: int, steps: tuple[str, ...], step: int, outcome: str,
                     order: str = "any", window: int | None = None) -> list[tuple]:
    """(campaign, customer, t1, reached_step) of the journeys that reached `step` (or
    dropped off at it), by t1, campaign (None first), customer."""
    out = []
    for (camp, customer), r in counted_journeys(events, tenant, campaign, use_campaign, frm, to,
                                                steps, order).items():
        reached = [k for k in range(1, len(steps) + 1) if has_reached(r, k, window)]
        if outcome == "reached" and step in reached or (
                outcome == "dropped" and step - 1 in reached and step not in reached):
            out.append((camp, customer, r[0], max(reached)))
    return sorted(out, key=lambda j: (j[2], j[0] is not None, j[0] or "", j[1]))

def campaign_overview(events: list[Event], tenant: str, campaign: str, frm: int, to: int,
                      steps: tuple[str, ...], engaged_s: float) -> dict:
    return overview(events, tenant, campaign, True, frm, to, steps, engaged_s)


def overview(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
             frm: int, to: int, steps: tuple[str, ...], engaged_s: float, order: str = "any",
             window: int | None = None) -> dict:
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
        "funnel": funnel_report(events, tenant, campaign, use_campaign, frm, to, steps, order,
                                window),
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


def value_in(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
             metric: str, lo: int, hi: int, steps: tuple[str, ...], engaged_s: float) -> int:
    """A time-series metric over the events (or journeys' t1) in [lo, hi)."""
    if metric == "funnel_entries":
        return funnel_report(events, tenant, campaign, use_campaign, lo, hi, steps)[0][
            "customers"]
    if metric == "conversations":
        return conversation_block(events, tenant, campaign, use_campaign, lo, hi,
                                  engaged_s)["conversations"]["total"]
    if metric == "engaged":
        return conversation_block(events, tenant, campaign, use_campaign, lo, hi,
                                  engaged_s)["engagement"]["engaged"]
    if metric == "intents":
        return sum(intent_counts(events, tenant, campaign, use_campaign, lo, hi).values())
    label = metric.removeprefix("intent:")
    return intent_counts(events, tenant, campaign, use_campaign, lo, hi).get(label, 0)


def timeseries(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
               metric: str, width: int, frm: int, to: int, steps: tuple[str, ...],
               engaged_s: float) -> list[tuple[int, int]]:
    """[(bucket start µs, value)] from the bucket holding `frm` to the last before `to`."""
    first = frm - frm % width
    return [(start, value_in(events, tenant, campaign, use_campaign, metric, max(start, frm),
                             min(start + width, to), steps, engaged_s))
            for start in range(first, to, width)]


MINUTE = 60_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def local(us: int, tz: str) -> datetime:
    return (_EPOCH + timedelta(microseconds=us)).astimezone(ZoneInfo(tz))


def local_edges(frm: int, to: int, interval: str, tz: str) -> list[int]:
    """Bucket starts of [frm, to) in `tz`, found minute by minute: where the local clock
    reads a whole hour, or where the local date changes; from the one holding `frm`."""
    edges = []
    first = frm - frm % MINUTE - 3 * DAY
    previous = local(first - MINUTE, tz)
    for t in range(first, to, MINUTE):
        now = local(t, tz)
        if (interval == "hour" and now.minute == 0 and now.second == 0) or (
                interval == "day" and now.date() > previous.date()):
            edges.append(t)
        previous = now
    return [max(e for e in edges if e <= frm)] + [e for e in edges if e > frm]


def local_midnight(day: str, tz: str) -> int:
    """The first instant (to the minute) whose date in `tz` is `day` or later."""
    target = datetime.fromisoformat(day).date()
    t = int((datetime.fromisoformat(day).replace(tzinfo=UTC) - _EPOCH).total_seconds()
            ) * 1_000_000 - 2 * DAY
    while local(t, tz).date() < target:
        t += MINUTE
    return t


def iso(us: int, tz: str) -> str:
    if tz == "UTC":
        return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
    return local(us, tz).isoformat()


def local_timeseries(events: list[Event], tenant: str, campaign: str | None,
                     use_campaign: bool, metric: str, interval: str, tz: str, frm: int, to: int,
                     steps: tuple[str, ...], engaged_s: float) -> list[tuple[str, int]]:
    """[(bucket start in `tz`, value)], each bucket cut to [frm, to)."""
    edges = local_edges(frm, to, interval, tz)
    out = []
    for start, end in zip(edges, [*edges[1:], to], strict=True):
        out.append((iso(start, tz), value_in(events, tenant, campaign, use_campaign, metric,
                                             max(start, frm), min(end, to), steps, engaged_s)))
    return out

def heatmap(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
            frm: int, to: int, tz: str, engaged_s: float) -> list[dict]:
    """All 168 (weekday, hour) cells of local time in `tz`."""
    cells = {(d, h): [0, 0] for d in range(7) for h in range(24)}
    for e in unique(events):
        if (_in_scope(e, tenant, campaign, use_campaign)
                and e.event_type in ("call_ended", "chat_ended") and frm <= e.occurred_us < to):
            when = local(e.occurred_us, tz)
            cell = cells[(when.weekday(), when.hour)]
            cell[0] += 1
            cell[1] += e.value >= engaged_s
    return [{"weekday": d, "hour": h, "conversations": n, "engaged": k,
             "engagement_rate": _div(k, n)} for (d, h), (n, k) in sorted(cells.items())]

def js_number(x: float) -> str:
    """How JavaScript writes a double (the shortest digits that read back), integers as
    their digits."""
    if x == int(x):
        return str(int(x))
    d = Decimal(repr(x))
    if Decimal("1e-6") <= abs(d) < Decimal("1e21"):
        return format(d, "f")
    return format(d, "e").replace("e-0", "e-").replace("e+0", "e+")


def metadata_group(e: Event, key: str) -> str | None:
    value = json.loads(e.metadata).get(key) if e.metadata else None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:
            return None
        return js_number(x) if math.isfinite(x) else None
    return None


def breakdown(events: list[Event], tenant: str, campaign: str | None, use_campaign: bool,
              frm: int, to: int, by: str, limit: int, engaged_s: float) -> dict:
    """Conversations by channel, campaign or metadata.<key>: top `limit` and `other`."""
    groups: dict[str | None, list] = {}
    for e in unique(events):
        if (_in_scope(e, tenant, campaign, use_campaign)
                and e.event_type in ("call_ended", "chat_ended") and frm <= e.occurred_us < to):
            value = (_channel(e) if by == "channel" else e.campaign_id if by == "campaign"
                     else metadata_group(e, by.removeprefix("metadata.")))
            g = groups.setdefault(value, [0, 0, 0.0])
            g[0] += 1
            g[1] += e.value >= engaged_s
            g[2] += e.value

    def numbers(n: int, k: int, d: float) -> dict:
        return {"conversations": n, "engaged": k, "engagement_rate": _div(k, n),
                "avg_duration_s": _div(d, n)}

    ordered = sorted(groups.items(), key=lambda g: (-g[1][0], g[0] is None, g[0] or ""))
    rest = ordered[limit:]
    return {"groups": [{"value": v, **numbers(*g)} for v, g in ordered[:limit]],
            "other": numbers(*(sum(g[i] for _, g in rest) for i in range(3))) if rest else None}

def approx_equal(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Deep equality where floats may differ by summation order (structs as their JSON)."""
    a, b = (msgspec.to_builtins(x) if isinstance(x, msgspec.Struct) else x for x in (a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and (
            abs(a - b) <= rel * max(1.0, abs(a), abs(b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(approx_equal(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(approx_equal(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b
