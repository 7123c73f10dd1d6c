"""Query parameters: parsed once, validated, and explained when wrong.

Ids that later reach DuckDB are validated here or travel only as bound parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from starlette.requests import Request

from pulse.rollups.windows import DAY_US, HOUR_US
from pulse.schemas.lake import us_to_datetime

from .errors import ApiError

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


def parse_time(name: str, raw: str | None) -> int:
    """RFC 3339 with an offset, or YYYY-MM-DD (midnight UTC) -> µs since the epoch."""
    if raw is None or raw == "":
        raise ApiError(400, "missing_parameter",
                       f"`{name}` is required: an RFC 3339 time (2026-11-01T00:00:00Z) or a "
                       "date (2026-11-01)")
    try:
        if _DATE.match(raw):
            value = datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
        else:
            value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "bad_time",
                       f"`{name}`={raw!r} is not an RFC 3339 time (2026-11-01T00:00:00Z) or a "
                       "date (2026-11-01)") from None
    if value.tzinfo is None:
        raise ApiError(400, "bad_time",
                       f"`{name}`={raw!r} needs a UTC offset, e.g. {raw}Z or {raw}+01:00")
    return (value - _EPOCH) // _ONE_US


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def parse_range(request: Request) -> Range:
    q = request.query_params
    from_us = parse_time("from", q.get("from"))
    to_us = parse_time("to", q.get("to"))
    if from_us >= to_us:
        raise ApiError(400, "bad_range", "`from` must be before `to` (ranges are [from, to))")
    if to_us - from_us > MAX_RANGE_DAYS * DAY_US:
        raise ApiError(400, "range_too_long",
                       f"a range may span at most {MAX_RANGE_DAYS} days")
    return Range(from_us, to_us)


def parse_campaign(request: Request, name: str = "campaign") -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    return check_id(name, value)


def check_id(name: str, value: str) -> str:
    if len(value) > _LABEL_MAX:
        raise ApiError(400, "bad_parameter", f"`{name}` is at most {_LABEL_MAX} characters")
    return value


def parse_interval(request: Request) -> str:
    interval = request.query_params.get("interval", "hour")
    if interval not in INTERVALS:
        raise ApiError(400, "bad_interval", "`interval` must be `hour` or `day`")
    return interval


def check_points(interval: str, r: Range) -> None:
    width = INTERVALS[interval]
    points = -(-(r.to_us - (r.from_us - r.from_us % width)) // width)
    if points > MAX_POINTS[interval]:
        limit = MAX_POINTS[interval] * width // DAY_US
        hint = "; use interval=day" if interval == "hour" else ""
        raise ApiError(400, "range_too_long",
                       f"interval={interval} allows ranges up to {limit} days "
                       f"({MAX_POINTS[interval]} points){hint}")


def iso(us: int) -> str:
    return us_to_datetime(us).isoformat().replace("+00:00", "Z")
