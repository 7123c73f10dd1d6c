"""Report bodies of contract section 4, derived from `Measures` whatever their source.

Rates, shares and conversions are computed here and only here, so the rollup path and
the lake path cannot disagree on a division. Every ratio is 0.0 when its divisor is 0.
The bodies are msgspec structs: `api.models` puts each in its answer's envelope, and
`/openapi.json` is generated from them, so the shapes are written down once.
"""

from __future__ import annotations

import csv
import io

import msgspec

from .breakdown import Tally, rank
from .metrics import Measures
from .reach import US_PER_S, Durations

METRICS = ("conversations", "engaged", "intents", "funnel_entries")
"""Time-series metrics besides `intent:<label>`."""
METRIC_HELP = "conversations, engaged, intents, intent:<label> or funnel_entries"


class Conversations(msgspec.Struct):
    total: int
    calls: int
    chats: int


class Engagement(msgspec.Struct):
    total_duration_s: float
    avg_duration_s: float
    engaged: int
    engagement_rate: float


class LabelShare(msgspec.Struct):
    count: int
    share: float


class IntentSummary(msgspec.Struct):
    total: int
    intent_rate: float
    by_label: dict[str, LabelShare]


class FunnelStep(msgspec.Struct):
    step: str
    customers: int
    conversion_from_previous: float
    conversion_from_start: float


class IntentItem(msgspec.Struct):
    label: str
    count: int
    share: float


class Point(msgspec.Struct):
    t: str
    """Bucket start, RFC 3339 with the offset of the answer's time zone."""
    value: int


class CampaignItem(msgspec.Struct):
    campaign_id: str
    conversations: int


class StepTime(msgspec.Struct):
    step: str
    """The step's label."""
    count: int
    """Journeys counted at this step: the durations below are theirs."""
    mean_s: float | None
    median_s: float | None
    """The lower median: index (count - 1) // 2 of the sorted durations."""
    p90_s: float | None
    """Nearest rank: index ceil(0.9 count) - 1 of the sorted durations."""


class Customer(msgspec.Struct):
    campaign_id: str | None
    customer_id: str
    entered_at: str
    """The journey's t1 (RFC 3339)."""
    reached_step: int
    """The highest step it reached under the answer's order and window (1..n)."""


class HeatCell(msgspec.Struct):
    weekday: int
    """0 = Monday."""
    hour: int
    conversations: int
    engaged: int
    engagement_rate: float


class GroupNumbers(msgspec.Struct, kw_only=True):
    conversations: int
    engaged: int
    engagement_rate: float
    avg_duration_s: float


class BreakdownGroup(GroupNumbers, kw_only=True):
    value: str | None
    """The channel, the campaign (null: events without one) or the metadata value."""


# ---- the numbers of each answer (what it holds besides the envelope) -----------------


class OverviewNumbers(msgspec.Struct, kw_only=True):
    conversations: Conversations
    engagement: Engagement
    intents: IntentSummary
    funnel: list[FunnelStep]
    """In step order."""


class IntentsNumbers(msgspec.Struct, kw_only=True):
    total: int
    intents: list[IntentItem]
    """By count descending, then label."""


class FunnelNumbers(msgspec.Struct, kw_only=True):
    steps: list[FunnelStep]


class TimeseriesNumbers(msgspec.Struct, kw_only=True):
    metric: str
    interval: str
    tz: str
    """The IANA time zone the buckets are cut in."""
    points: list[Point]


class TimeToConvertNumbers(msgspec.Struct, kw_only=True):
    steps: list[StepTime]
    """Steps 2..n in step order: seconds from t1 to reaching each."""


class CustomersNumbers(msgspec.Struct, kw_only=True):
    step: int
    outcome: str
    customers: list[Customer]
    """By entered_at, then campaign_id (null first), then customer_id."""
    next_cursor: str | None
    """Pass as `cursor` for the next page; null after the last."""


class HeatmapNumbers(msgspec.Struct, kw_only=True):
    tz: str
    cells: list[HeatCell]
    """All 168, by weekday, then hour."""


class BreakdownNumbers(msgspec.Struct, kw_only=True):
    by: str
    groups: list[BreakdownGroup]
    """By conversations descending, then value in code-point order (null last)."""
    other: GroupNumbers | None
    """The groups after the first `limit`, summed; null when there are none."""


class CampaignsNumbers(msgspec.Struct, kw_only=True):
    campaigns: list[CampaignItem]


class UsageNumbers(msgspec.Struct, kw_only=True):
    usage: dict[str, float]


# ---- derived numbers ------------------------------------------------------------------


def ratio(numerator: float, divisor: float) -> float:
    return numerator / divisor if divisor else 0.0


def conversations(m: Measures) -> Conversations:
    return Conversations(m.conversations, m.calls, m.chats)


def engagement(m: Measures) -> Engagement:
    return Engagement(float(m.duration_s), ratio(m.duration_s, m.conversations), m.engaged,
                      ratio(m.engaged, m.conversations))


def intents_total(m: Measures) -> int:
    return sum(m.intents.values())


def intent_list(m: Measures) -> list[IntentItem]:
    """Intents by count descending, then label."""
    total = intents_total(m)
    ordered = sorted(m.intents.items(), key=lambda item: (-item[1], item[0]))
    return [IntentItem(label, n, ratio(n, total)) for label, n in ordered if n]


def intent_summary(m: Measures) -> IntentSummary:
    total = intents_total(m)
    return IntentSummary(total, ratio(total, m.conversations),
                         {i.label: LabelShare(i.count, i.share) for i in intent_list(m)})


def reached(funnel: dict[int, int], n_steps: int) -> list[int]:
    """Journeys that reached each step, from counts by the step reached (0 = S1 only)."""
    out = [0] * n_steps
    running = 0
    for k in range(n_steps - 1, -1, -1):
        running += funnel.get(k, 0)
        out[k] = running
    return out


def funnel(m: Measures, steps: tuple[str, ...]) -> list[FunnelStep]:
    """One item per step: journeys that reached it, and conversion between steps."""
    counts = reached(m.funnel, len(steps))
    return [FunnelStep(step, counts[k], ratio(counts[k], counts[k - 1] if k else counts[0]),
                       ratio(counts[k], counts[0]))
            for k, step in enumerate(steps)]


def funnel_entries(m: Measures) -> int:
    """Journeys whose t1 lies in the bucket: every journey counted enters at step 1."""
    return sum(m.funnel.values())


def usage(m: Measures) -> dict[str, float]:
    return {category: float(amount) for category, amount in sorted(m.usage.items())}


def overview(m: Measures, steps: tuple[str, ...]) -> OverviewNumbers:
    return OverviewNumbers(conversations=conversations(m), engagement=engagement(m),
                           intents=intent_summary(m), funnel=funnel(m, steps))


def intents(m: Measures) -> IntentsNumbers:
    return IntentsNumbers(total=intents_total(m), intents=intent_list(m))


def metric_label(metric: str) -> str | None:
    """The label of `intent:<label>`; None for the other metrics.

    Raises ValueError for a metric that is neither.
    """
    if metric.startswith("intent:") and len(metric) > len("intent:"):
        return metric.removeprefix("intent:")
    if metric in METRICS:
        return None
    raise ValueError(f"not a metric: {metric!r}")


def metric_part(metric: str) -> str:
    """Which part of `Measures` a metric needs: funnel, conversations or measures."""
    if metric == "funnel_entries":
        return "funnel"
    return "conversations" if metric in ("conversations", "engaged") else "measures"


def metric_value(metric: str, m: Measures) -> int:
    """One time-series point: `metric` (checked by `metric_label`) of a bucket's measures."""
    if metric.startswith("intent:"):
        return m.intents.get(metric.removeprefix("intent:"), 0)
    if metric == "conversations":
        return m.conversations
    if metric == "engaged":
        return m.engaged
    if metric == "intents":
        return intents_total(m)
    return funnel_entries(m)


def step_time(step: str, d: Durations) -> StepTime:
    if not d.count:
        return StepTime(step, 0, None, None, None)
    assert d.median_us is not None and d.p90_us is not None
    return StepTime(step, d.count, d.total_us / (d.count * US_PER_S), d.median_us / US_PER_S,
                    d.p90_us / US_PER_S)


def time_to_convert(durations: list[Durations], steps: tuple[str, ...]) -> TimeToConvertNumbers:
    """Steps 2..n from their `Durations` (in step order)."""
    return TimeToConvertNumbers(steps=[step_time(step, d)
                                       for step, d in zip(steps[1:], durations, strict=True)])


CUSTOMER_COLUMNS = ("campaign_id", "customer_id", "entered_at", "reached_step")


def customers_csv(customers: list[Customer]) -> str:
    """The list an owner exports: a header row, then one row per journey (no campaign:
    an empty field)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CUSTOMER_COLUMNS)
    writer.writerows((c.campaign_id or "", c.customer_id, c.entered_at, c.reached_step)
                     for c in customers)
    return out.getvalue()


def heatmap(conversations: list[int], engaged: list[int], tz: str) -> HeatmapNumbers:
    """Every weekday-hour cell (index weekday * 24 + hour), zeros included."""
    return HeatmapNumbers(tz=tz, cells=[
        HeatCell(cell // 24, cell % 24, n, k, ratio(k, n))
        for cell, (n, k) in enumerate(zip(conversations, engaged, strict=True))])


def _group_numbers(t: Tally) -> GroupNumbers:
    return GroupNumbers(conversations=t.conversations, engaged=t.engaged,
                        engagement_rate=ratio(t.engaged, t.conversations),
                        avg_duration_s=ratio(t.duration_s, t.conversations))


def breakdown(groups: dict[str | None, Tally], by: str, limit: int) -> BreakdownNumbers:
    """The first `limit` groups and the sum of the rest (`rollups.breakdown.rank`)."""
    top, rest = rank(groups, limit)
    return BreakdownNumbers(
        by=by, groups=[BreakdownGroup(value=value, **msgspec.structs.asdict(_group_numbers(t)))
                for value, t in top],
        other=None if rest is None else _group_numbers(rest))
