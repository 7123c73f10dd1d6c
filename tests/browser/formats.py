"""dashboard/src/format.ts in Python: what the page must show for a number of the API's.

Written from format.ts's documented rules (JS toFixed, Math.round, String(number)), not
from its code, so that a test recomputing the page's text from the API's JSON catches a
page that formats a number differently.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

NONE = "–"
MINUS = "−"  # U+2212, as format.ts writes negative changes


def to_fixed_1(x: float) -> str:
    """JS `x.toFixed(1)`: the double's exact value rounded, ties to the larger digit."""
    return str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def js_round(x: float) -> int:
    """JS `Math.round`: nearest integer, ties towards +infinity."""
    down = int(Decimal(x).to_integral_value(rounding="ROUND_FLOOR"))
    return down + 1 if Decimal(x) - down >= Decimal("0.5") else down


def js_string(x: float) -> str:
    """JS `String(number)` for the plain range the dashboard shows."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def fmt_count(n: float) -> str:
    return str(js_round(n))


def fmt_percent(ratio: float) -> str:
    return f"{to_fixed_1(ratio * 100)}%"


def fmt_seconds(s: float) -> str:
    return f"{to_fixed_1(s)} s"


def fmt_number(x: float) -> str:
    return js_string(js_round(x * 100) / 100)


def humanize(name: str) -> str:
    words = re.sub(r"[_-]+", " ", name).strip()
    return words[:1].upper() + words[1:]


# ---- changes against the previous period ------------------------------------------------


def _sign(x: float) -> str:
    return "+" if x > 0 else MINUS if x < 0 else ""


def _relative(now: float, before: float) -> str:
    if before == 0:
        return "n/a"
    return f"{_sign(now - before)}{to_fixed_1(abs((now - before) / before * 100))}%"


def count_change(now: int, before: int) -> str:
    return f"{_sign(now - before)}{fmt_count(abs(now - before))} ({_relative(now, before)})"


def seconds_change(now: float, before: float) -> str:
    return f"{_sign(now - before)}{to_fixed_1(abs(now - before))} s ({_relative(now, before)})"


def rate_change(now: float, before: float) -> str:
    if before == 0:
        return "n/a"
    return f"{_sign(now - before)}{to_fixed_1(abs((now - before) * 100))} pp"


# ---- spans and times ----------------------------------------------------------------------


def fmt_lag(seconds: int) -> str:
    """The two largest units of a whole number of seconds."""
    s = max(0, seconds)
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 60:
        return f"{s} s"
    if m < 60:
        return f"{m} min {s % 60} s" if s % 60 else f"{m} min"
    if h < 24:
        return f"{h} h {m % 60} min" if m % 60 else f"{h} h"
    return f"{d} d {h % 24} h" if h % 24 else f"{d} d"


def fmt_span(seconds: float | None) -> str:
    return NONE if seconds is None else fmt_lag(math.floor(seconds))


def fmt_datetime(value: str | int, tz: str) -> str:
    """An instant (RFC 3339, or epoch ms) as "YYYY-MM-DD HH:MM" of its wall time in tz."""
    d = (datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int)
         else datetime.fromisoformat(value.replace("Z", "+00:00")))
    return d.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def fmt_point(t: str) -> str:
    """A bucket start as the API wrote it, in its zone: the wall time before the offset."""
    return f"{t[:10]} {t[11:16]}"
