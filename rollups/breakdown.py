"""Breakdowns of conversations (contract section 3): group values, order, top N and other.

A group is the value of `channel`, `campaign` (None for events without one) or one
top-level `metadata` key. A metadata value becomes text here, in Python, for both
sources: the lake groups conversations by the JSON text of the value
(`METADATA_GROUP_SQL`), and `value_text` turns each into the group's value, merging
texts that are one value (`3`, `3.0` and `"3"` are all 3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

BY_FIXED = ("channel", "campaign")
METADATA = "metadata."
MAX_KEY = 128
_JS_PLAIN_EXPONENTS = range(-6, 21)
"""Decimal exponents (of the leading digit) a number is written without `e` for, as
JavaScript's Number#toString does (0.000001 to below 1e21)."""


class Tally(msgspec.Struct):
    """What a group sums: conversations, engaged ones, and their seconds."""

    conversations: int = 0
    engaged: int = 0
    duration_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.conversations += other.conversations
        self.engaged += other.engaged
        self.duration_s += other.duration_s


def metadata_key(by: str) -> str | None:
    """The key of `metadata.<key>` (all of it after the dot); None for the fixed ones.

    Raises ValueError for anything else, an empty key or one over MAX_KEY characters.
    """
    if by in BY_FIXED:
        return None
    if not by.startswith(METADATA) or not 1 <= len(by) - len(METADATA) <= MAX_KEY:
        raise ValueError(by)
    return by[len(METADATA):]


def number_text(x: float) -> str:
    """An integer-valued number as its digits, any other as the shortest decimal that
    reads back as the same double, written as JavaScript writes it (`2.5`, `0.001`,
    `1.5e-7`)."""
    if x == int(x):
        return str(int(x))
    sign, digits, exponent = Decimal(repr(x)).as_tuple()
    text = "".join(map(str, digits))
    lead = len(text) + int(exponent) - 1  # exponent of the first digit
    minus = "-" if sign else ""
    if lead in _JS_PLAIN_EXPONENTS:
        if lead < 0:
            return f"{minus}0.{'0' * (-lead - 1)}{text}"
        whole, frac = text[:lead + 1], text[lead + 1:]
        return f"{minus}{whole}.{frac}"
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{minus}{mantissa}e{'+' if lead > 0 else '-'}{abs(lead)}"


def value_text(value: Any) -> str | None:
    """The group of a decoded JSON value: a string as itself, a number as `number_text`
    of the nearest double, a boolean as true/false; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        try:
            x = float(value)
        except OverflowError:
            return None
        return number_text(x) if math.isfinite(x) else None
    return None


def json_value_text(token: str | None) -> str | None:
    """`value_text` of a JSON text (as the lake's SQL gives it)."""
    return None if token is None else value_text(json.loads(token))


def merge(found: Iterable[tuple[str | None, Tally]]) -> dict[str | None, Tally]:
    out: dict[str | None, Tally] = {}
    for value, tally in found:
        if tally.conversations:
            out.setdefault(value, Tally()).add(tally)
    return out


def rank(groups: dict[str | None, Tally], limit: int,
         ) -> tuple[list[tuple[str | None, Tally]], Tally | None]:
    """The first `limit` groups by conversations descending, then value in code-point
    order (None last), and the sum of the rest (None when nothing is left)."""
    ordered = sorted(groups.items(), key=lambda g: (-g[1].conversations, g[0] is None,
                                                    g[0] or ""))
    rest = ordered[limit:]
    if not rest:
        return ordered, None
    other = Tally()
    for _, tally in rest:
        other.add(tally)
    return ordered[:limit], other


def json_pointer(key: str) -> str:
    """The RFC 6901 pointer to top-level `key` (DuckDB's JSON functions take it)."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


METADATA_VALUE_COLUMN = "json_extract(metadata, $metadata_key) AS metadata_value"
"""DuckDB: the value of `metadata` at `$metadata_key` (a `json_pointer`), as JSON: read
once per event, the group below only looks at the small value."""
METADATA_GROUP_SQL = ("CASE WHEN json_type(metadata_value) NOT IN ('NULL', 'ARRAY', 'OBJECT') "
                      "THEN metadata_value::VARCHAR END")
"""DuckDB: the JSON text of `metadata_value`, NULL when absent, null, an array or an object."""
