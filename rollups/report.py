"""Report bodies of contract section 4, derived from `Measures` whatever their source.

Rates, shares and conversions are computed here and only here, so the rollup path and
the lake path cannot disagree on a division. Every ratio is 0.0 when its divisor is 0.
"""

from __future__ import annotations

from typing import Any

from .metrics import Measures


def ratio(numerator: float, divisor: float) -> float:
    return numerator / divisor if divisor else 0.0


def conversations(m: Measures) -> dict[str, int]:
    return {"total": m.conversations, "calls": m.calls, "chats": m.chats}


def engagement(m: Measures) -> dict[str, Any]:
    return {
        "total_duration_s": float(m.duration_s),
        "avg_duration_s": ratio(m.duration_s, m.conversations),
        "engaged": m.engaged,
        "engagement_rate": ratio(m.engaged, m.conversations),
    }


def intent_list(m: Measures) -> list[dict[str, Any]]:
    """Intents by count descending, then label."""
    total = sum(m.intents.values())
    ordered = sorted(m.intents.items(), key=lambda item: (-item[1], item[0]))
    return [{"label": label, "count": n, "share": ratio(n, total)} for label, n in ordered if n]


def intents(m: Measures) -> dict[str, Any]:
    total = sum(m.intents.values())
    return {
        "total": total,
        "intent_rate": ratio(total, m.conversations),
        "by_label": {
            item["label"]: {"count": item["count"], "share": item["share"]}
            for item in intent_list(m)
        },
    }


def funnel(m: Measures, steps: tuple[str, ...]) -> list[dict[str, Any]]:
    """One item per step: journeys that reached it, and conversion between steps."""
    reached = [0] * len(steps)
    running = 0
    for k in range(len(steps) - 1, -1, -1):
        running += m.funnel.get(k, 0)
        reached[k] = running
    items = []
    for k, step in enumerate(steps):
        previous = reached[k - 1] if k else reached[0]
        items.append(
            {
                "step": step,
                "customers": reached[k],
                "conversion_from_previous": ratio(reached[k], previous),
                "conversion_from_start": ratio(reached[k], reached[0]),
            }
        )
    return items


def usage(m: Measures) -> dict[str, float]:
    return {category: float(amount) for category, amount in sorted(m.usage.items())}


def overview(m: Measures, steps: tuple[str, ...]) -> dict[str, Any]:
    return {
        "conversations": conversations(m),
        "engagement": engagement(m),
        "intents": intents(m),
        "funnel": funnel(m, steps),
    }
