"""Response models of contract section 4; `/openapi.json` is generated from them.

A report answer is the envelope (`Report`: tenant, range, source, as_of) followed by the
fields of its numbers struct from `rollups.report`, where each body is defined once;
`answer` builds the model from the two, so neither list of fields is written twice.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from pulse.rollups import report

from .errors import ErrorCode

Source = Literal["rollups", "lake", "mixed"]


class Report(msgspec.Struct, kw_only=True):
    tenant_id: str
    from_: str = msgspec.field(name="from")
    to: str
    campaign_id: str | None
    source: Source
    """Where the numbers came from."""
    as_of: str | None
    """Every event produced to the topic before this time (RFC 3339) is in the numbers."""


def answer(name: str, numbers: type[msgspec.Struct], compare: bool = False) -> type[Report]:
    """The model of an answer: the envelope, then the fields of `numbers`; with `compare`,
    also `previous`: the same numbers for the previous period, with its own range."""
    fields: list[tuple[str, Any, Any]] = [(f.name, f.type, _default(f))
                                          for f in msgspec.structs.fields(numbers)]
    period = None
    if compare:
        period = msgspec.defstruct(f"{name}Previous", [
            ("from_", str, msgspec.field(name="from")), ("to", str), *fields],
            kw_only=True, module=__name__)
        fields.append(("previous", period | msgspec.UnsetType, msgspec.UNSET))
    model = msgspec.defstruct(name, fields, bases=(Report,), kw_only=True, module=__name__)
    PREVIOUS[model] = period
    return model  # type: ignore[no-any-return]


PREVIOUS: dict[type, type | None] = {}
"""Each answer model's `previous` model (None when it takes no `compare`)."""


def _default(f: msgspec.structs.FieldInfo) -> Any:
    if f.default is not msgspec.NODEFAULT:
        return f.default
    if f.default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=f.default_factory)
    return msgspec.field()


def build(model: type[Report], envelope: dict[str, Any], numbers: msgspec.Struct,
          previous: tuple[str, str, msgspec.Struct] | None = None) -> Report:
    """An answer of `model` from its envelope's values and its numbers, and with
    `previous` = (from, to, numbers) the previous period's."""
    extra = {}
    if previous is not None:
        period = PREVIOUS[model]
        assert period is not None, f"{model.__name__} takes no compare"
        frm, to, before = previous
        extra["previous"] = period(from_=frm, to=to, **msgspec.structs.asdict(before))
    return model(**envelope, **msgspec.structs.asdict(numbers), **extra)


Overview = answer("Overview", report.OverviewNumbers, compare=True)
Intents = answer("Intents", report.IntentsNumbers, compare=True)
Funnel = answer("Funnel", report.FunnelNumbers)
Timeseries = answer("Timeseries", report.TimeseriesNumbers)
Campaigns = answer("Campaigns", report.CampaignsNumbers)
TimeToConvert = answer("TimeToConvert", report.TimeToConvertNumbers)
Customers = answer("Customers", report.CustomersNumbers)
Heatmap = answer("Heatmap", report.HeatmapNumbers)
Breakdown = answer("Breakdown", report.BreakdownNumbers)
Usage = answer("Usage", report.UsageNumbers, compare=True)


class Me(msgspec.Struct):
    role: str
    tenant_id: str | None


class Tenants(msgspec.Struct):
    tenants: list[str]


class ErrorDetail(msgspec.Struct):
    code: ErrorCode
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
