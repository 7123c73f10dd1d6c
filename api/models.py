"""Response models of contract section 4; `/openapi.json` is generated from them."""

from __future__ import annotations

from typing import Any

import msgspec


class Report(msgspec.Struct, kw_only=True):
    tenant_id: str
    from_: str = msgspec.field(name="from")
    to: str
    campaign_id: str | None
    source: str
    """`rollups`, `lake` or `mixed`: where the numbers came from."""
    as_of: str | None
    """Event time the numbers are complete up to (RFC 3339), when known."""


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


class Overview(Report, kw_only=True):
    conversations: Conversations
    engagement: Engagement
    intents: IntentSummary
    funnel: list[FunnelStep]


class IntentItem(msgspec.Struct):
    label: str
    count: int
    share: float


class Intents(Report, kw_only=True):
    total: int
    intents: list[IntentItem]


class Funnel(Report, kw_only=True):
    steps: list[FunnelStep]


class Point(msgspec.Struct):
    t: str
    value: int


class Timeseries(Report, kw_only=True):
    metric: str
    interval: str
    points: list[Point]


class CampaignItem(msgspec.Struct):
    campaign_id: str
    conversations: int


class Campaigns(Report, kw_only=True):
    campaigns: list[CampaignItem]


class Usage(Report, kw_only=True):
    usage: dict[str, float]


class Me(msgspec.Struct):
    role: str
    tenant_id: str | None


class Tenants(msgspec.Struct):
    tenants: list[str]


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    error: ErrorDetail


class Health(msgspec.Struct):
    status: str
    detail: str | None = None


class Status(msgspec.Struct):
    ready: bool
    replica: dict[str, Any]
    totals: dict[str, int]
    """read = accepted + duplicates + dead_letters, counted once per input message."""
    accounting_holds: bool
    partitions: dict[str, dict[str, Any]]
    lake: dict[str, Any]
    lag: dict[str, Any]
    as_of: str | None
