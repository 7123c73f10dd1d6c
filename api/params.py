"""Query parameters: parsed once, validated, and explained when wrong.

Ids that later reach DuckDB are validated here or travel only as bound parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from starlette.datastructures import QueryParams
from starlette.requests import Request

from pulse.rollups import breakdown, reach, zones
from pulse.rollups.windows import DAY_US, HOUR_US
from pulse.schemas.lake import us_to_datetime

from .errors import ApiError, ErrorCode

MAX_RANGE_DAYS = 3700
INTERVALS = {"hour": HOUR_US, "day": DAY_US}
MAX_POINTS = {"hour": 93 * 24, "day": MAX_RANGE_DAYS}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LABEL_MAX = 128


@dataclass(frozen=True)
class Range:
    from_us: int
    to_us: int

    @property
    def days(self) -> float:
        return (self.to_us - self.from_us) / DAY_US


def parse_time(name: str, raw: str | None, zone: ZoneInfo | None = None) -> int:
    """RFC 3339 with an offset, or YYYY-MM-DD (midnight UTC, or local midnight in `zone`)
    -> µs since the epoch."""
    if raw is None or raw == "":
        raise ApiError(400, ErrorCode.MISSING_PARAMETER,
                       f"`{name}` is required: an RFC 3339 time (2026-11-01T00:00:00Z) or a "
                       "date (2026-11-01)")
    try:
        if _DATE.match(raw):
            day = date.fromisoformat(raw)
            if zone is not None and zone.key != zones.UTC_NAME:
                return zones.day_start(zone, (day - _EPOCH.date()).days)
            value = datetime.combine(day, datetime.min.time(), UTC)
        else:
            value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, ErrorCode.BAD_TIME,
                       f"`{name}`={raw!r} is not an RFC 3339 time (2026-11-01T00:00:00Z) or a "
                       "date (2026-11-01)") from None
    if value.tzinfo is None:
        raise ApiError(400, ErrorCode.BAD_TIME,
                       f"`{name}`={raw!r} needs a UTC offset, e.g. {raw}Z or {raw}+01:00")
    return (value - _EPOCH) // _ONE_US


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
_FIRST_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
_ZONED_FIRST_US = (datetime(1, 1, 3, tzinfo=UTC) - _EPOCH) // _ONE_US
_ZONED_LAST_US = (datetime(9999, 12, 29, tzinfo=UTC) - _EPOCH) // _ONE_US


KEPT = 4096
"""Entries each cache below keeps (then it starts again): dashboards send the same few
query strings and ranges over and over, and parsing or formatting one costs about as
much as sending an answer kept from the poll before (`api.etag`)."""
_QUERIES: dict[bytes, QueryParams] = {}
_RANGES: dict[tuple[str | None, str | None, str | None], Range] = {}
_ISO: dict[tuple[int, str | None], str] = {}


def query(request: Request) -> QueryParams:
    """The request's query parameters, parsed once per distinct query string."""
    raw = request.scope["query_string"]
    found = _QUERIES.get(raw)
    if found is None:
        if len(_QUERIES) >= KEPT:
            _QUERIES.clear()
        found = _QUERIES[raw] = QueryParams(raw)
    return found


def header(request: Request, name: bytes) -> str | None:
    """The request's header `name` (lower case, as ASGI servers give names), or None.

    One pass over the raw headers: `request.headers.get` builds a `Headers` object and,
    for a header that is absent (`If-None-Match` on most requests), raises and catches
    a `KeyError`, on the path of every answer."""
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def parse_range(request: Request, zone: ZoneInfo | None = None) -> Range:
    """`from` and `to`; dates are local midnights in `zone` (UTC if None)."""
    q = query(request)
    raw = (q.get("from"), q.get("to"), None if zone is None else zone.key)
    found = _RANGES.get(raw)
    if found is None:
        found = _parse_range(raw[0], raw[1], zone)
        if len(_RANGES) >= KEPT:
            _RANGES.clear()
        _RANGES[raw] = found
    return found


def _parse_range(frm: str | None, to: str | None, zone: ZoneInfo | None) -> Range:
    from_us = parse_time("from", frm, zone)
    to_us = parse_time("to", to, zone)
    if from_us >= to_us:
        raise ApiError(400, ErrorCode.BAD_RANGE,
                       "`from` must be before `to` (ranges are [from, to))")
    if to_us - from_us > MAX_RANGE_DAYS * DAY_US:
        raise ApiError(400, ErrorCode.RANGE_TOO_LONG,
                       f"a range may span at most {MAX_RANGE_DAYS} days")
    if zone is not None and zone.key != zones.UTC_NAME and not (
            _ZONED_FIRST_US <= from_us and to_us <= _ZONED_LAST_US):
        raise ApiError(400, ErrorCode.BAD_RANGE, "in a time zone other than UTC, `from` and "
                       "`to` must lie between 0001-01-03 and 9999-12-29 (local times at the "
                       "ends of the calendar do not exist)")
    return Range(from_us, to_us)


def parse_compare(request: Request, r: Range) -> Range | None:
    """The previous period `[from - (to - from), from)` with `compare=previous`, else None."""
    compare = query(request).get("compare") or None
    if compare is None:
        return None
    if compare != "previous":
        raise ApiError(400, ErrorCode.BAD_COMPARE, "`compare` must be `previous`")
    before = Range(2 * r.from_us - r.to_us, r.from_us)
    if before.from_us < _FIRST_US:
        raise ApiError(400, ErrorCode.BAD_COMPARE,
                       "`compare=previous`: the previous period would begin before year 1")
    return before


def parse_campaign(request: Request, name: str = "campaign") -> str | None:
    value = query(request).get(name)
    if value is None or value == "":
        return None
    return check_id(name, value)


def check_id(name: str, value: str) -> str:
    if len(value) > _LABEL_MAX:
        raise ApiError(400, ErrorCode.BAD_PARAMETER,
                       f"`{name}` is at most {_LABEL_MAX} characters")
    return value


def parse_funnel_options(request: Request) -> reach.FunnelOptions:
    """`order` (any or sequence) and `window` (seconds) of every answer holding a funnel."""
    q = query(request)
    order = q.get("order") or "any"
    if order not in reach.ORDERS:
        raise ApiError(400, ErrorCode.BAD_ORDER, "`order` must be `any` or `sequence`")
    window = q.get("window") or None
    if window is not None:
        if not (window.isascii() and window.isdigit()) or not (
                1 <= int(window) <= reach.MAX_WINDOW_S):
            raise ApiError(400, ErrorCode.BAD_WINDOW,
                           f"`window` must be a whole number of seconds from 1 to "
                           f"{reach.MAX_WINDOW_S}")
        return reach.FunnelOptions(order, int(window))
    return reach.FunnelOptions(order)


def _whole(request: Request, name: str, low: int, high: int, code: ErrorCode,
           what: str, default: int | None = None) -> int:
    raw = query(request).get(name) or None
    if raw is None:
        if default is not None:
            return default
        raise ApiError(400, ErrorCode.MISSING_PARAMETER, f"`{name}` is required: {what}")
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise ApiError(400, code, f"`{name}` must be {what}")
    return int(raw)


def parse_step(request: Request, n_steps: int) -> int:
    return _whole(request, "step", 1, n_steps, ErrorCode.BAD_STEP,
                  f"a funnel step number from 1 to {n_steps}")


def parse_outcome(request: Request, step: int) -> str:
    outcome = query(request).get("outcome") or None
    if outcome is None:
        raise ApiError(400, ErrorCode.MISSING_PARAMETER,
                       "`outcome` is required: `reached` or `dropped`")
    if outcome not in ("reached", "dropped"):
        raise ApiError(400, ErrorCode.BAD_OUTCOME, "`outcome` must be `reached` or `dropped`")
    if outcome == "dropped" and step == 1:
        raise ApiError(400, ErrorCode.BAD_OUTCOME, "`outcome=dropped` needs `step` 2 or more: "
                       "a journey enters the funnel at step 1, nobody drops off there")
    return outcome


def parse_limit(request: Request, maximum: int, default: int) -> int:
    return _whole(request, "limit", 1, maximum, ErrorCode.BAD_LIMIT,
                  f"a whole number from 1 to {maximum}", default)


def parse_by(request: Request) -> str:
    by = query(request).get("by") or None
    if by is None:
        raise ApiError(400, ErrorCode.MISSING_PARAMETER,
                       "`by` is required: channel, campaign or metadata.<key>")
    try:
        breakdown.metadata_key(by)
    except ValueError:
        raise ApiError(400, ErrorCode.BAD_BREAKDOWN,
                       f"`by` must be channel, campaign or metadata.<key>, the key 1 to "
                       f"{breakdown.MAX_KEY} characters") from None
    return by


def parse_format(request: Request) -> str:
    fmt = query(request).get("format") or "json"
    if fmt not in ("json", "csv"):
        raise ApiError(400, ErrorCode.BAD_FORMAT, "`format` must be `json` or `csv`")
    return fmt


def parse_tz(request: Request) -> ZoneInfo:
    try:
        return zones.zone(query(request).get("tz") or zones.UTC_NAME)
    except zones.UnknownZone:
        raise ApiError(400, ErrorCode.BAD_TZ, "`tz` must be an IANA time zone name, such as "
                       "Europe/Berlin, America/New_York, Asia/Kolkata or UTC") from None


def parse_interval(request: Request) -> str:
    interval = query(request).get("interval", "hour")
    if interval not in INTERVALS:
        raise ApiError(400, ErrorCode.BAD_INTERVAL, "`interval` must be `hour` or `day`")
    return interval


def check_points(interval: str, r: Range) -> None:
    width = INTERVALS[interval]
    points = -(-(r.to_us - (r.from_us - r.from_us % width)) // width)
    if points > MAX_POINTS[interval]:
        limit = MAX_POINTS[interval] * width // DAY_US
        hint = "; use interval=day" if interval == "hour" else ""
        raise ApiError(400, ErrorCode.RANGE_TOO_LONG,
                       f"interval={interval} allows ranges up to {limit} days "
                       f"({MAX_POINTS[interval]} points){hint}")


def iso(us: int, zone: ZoneInfo | None = None) -> str:
    """RFC 3339: in UTC with `Z`, or in `zone` with its offset at that instant."""
    name = None if zone is None or zone.key == zones.UTC_NAME else zone.key
    found = _ISO.get((us, name))
    if found is None:
        instant = us_to_datetime(us)
        found = (instant.isoformat().replace("+00:00", "Z") if zone is None or name is None
                 else instant.astimezone(zone).isoformat())
        if len(_ISO) >= KEPT:
            _ISO.clear()
        _ISO[us, name] = found
    return found
