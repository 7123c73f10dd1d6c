"""Every metric of contract section 3, defined once, in both dialects side by side.

An hour of one tenant and campaign is summarized by additive `Measures`. The worker
folds events into them in Python, vectorised over a batch's columns (`fold_columns`);
the API computes the very same
columns from the lake with SQL (`measures_sql`, `intents_sql`, `usage_sql`; the
funnel's journeys in `rollups.reach`). Everything a report shows (rates, shares,
conversions) is then derived from `Measures` by `rollups.report`, whichever side
produced them. The parity tests run both dialects over the same random streams against
a brute-force oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import msgspec
import numpy as np
import numpy.typing as npt

from pulse.schemas.events import EventType

from .windows import DAY_US, HOUR_US


class Measures(msgspec.Struct, array_like=True, gc=False):
    """Additive totals of one bucket (tenant, campaign, hour).

    `funnel[k]` counts the journeys whose first step S1 falls in this hour and which
    have reached exactly step k+1 (k = 0 is "S1 only"); it goes up and down as late
    events move journeys (see `rollups.funnel`).
    """

    events: int = 0
    calls: int = 0
    chats: int = 0
    duration_s: float = 0.0
    engaged: int = 0
    intents: dict[str, int] = msgspec.field(default_factory=dict)
    usage: dict[str, float] = msgspec.field(default_factory=dict)
    funnel: dict[int, int] = msgspec.field(default_factory=dict)
    chat_duration_s: float = 0.0
    """The chats' part of `duration_s` (calls have the rest), for breakdowns by channel.
    Fields are only ever added at the end, so older journal records still decode."""
    chat_engaged: int = 0
    """The chats' part of `engaged`."""

    @property
    def conversations(self) -> int:
        return self.calls + self.chats

    def add(self, other: Measures) -> None:
        self.events += other.events
        self.calls += other.calls
        self.chats += other.chats
        self.duration_s += other.duration_s
        self.engaged += other.engaged
        self.chat_duration_s += other.chat_duration_s
        self.chat_engaged += other.chat_engaged
        if other.intents:
            intents = self.intents
            for label, n in other.intents.items():
                intents[label] = intents.get(label, 0) + n
        if other.usage:
            usage = self.usage
            for category, amount in other.usage.items():
                usage[category] = usage.get(category, 0.0) + amount
        if not other.funnel:
            return
        for k, n in other.funnel.items():
            total = self.funnel.get(k, 0) + n
            if total:
                self.funnel[k] = total
            else:
                self.funnel.pop(k, None)

    def is_empty(self) -> bool:
        return not self.events and not self.funnel


@dataclass(frozen=True)
class EventColumns:
    """Events as numpy columns, the form the worker folds (`fold_columns`).

    String fields are codes into small per-batch dictionaries (-1: null), so a fold
    groups by integers; `kinds` are positions in `EVENT_TYPES`; `chats` is whether the
    normalized channel is chat; `values` are NaN where an event has none.
    """

    occurred: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    kinds: npt.NDArray[np.int8]
    chats: npt.NDArray[np.bool_]
    tenant: npt.NDArray[np.int32]
    campaign: npt.NDArray[np.int32]
    label: npt.NDArray[np.int32]
    category: npt.NDArray[np.int32]
    tenants: list[str]
    campaigns: list[str]
    labels: list[str]
    categories: list[str]


EVENT_TYPES: tuple[str, ...] = get_args(EventType)
"""Event types in the order of their codes in `EventColumns.kinds`."""
_CALL_KIND, _CHAT_KIND, _INTENT_KIND, _USAGE_KIND = (EVENT_TYPES.index(t) for t in (
    "call_ended", "chat_ended", "intent_detected", "usage"))


def fold_columns(cols: EventColumns, rows: npt.NDArray[np.int64], engaged_seconds: float
                 ) -> list[tuple[str, str | None, int, Measures]]:
    """The measures of the unique events `rows` (positions in `cols`), per (tenant,
    campaign, hour) they fall in (Python dialect, vectorised).

    Each sum accumulates its events in row order (`np.bincount` adds its weights in
    input order), so a replay of the same rows gives the same bits.
    """
    if not len(rows):
        return []
    tenant, campaign = cols.tenant[rows].astype(np.int64), cols.campaign[rows] + 1
    hour = cols.occurred[rows] // HOUR_US
    first_hour = int(hour.min())
    span = int(hour.max()) - first_hour + 1
    key = (tenant * (len(cols.campaigns) + 1) + campaign) * span + (hour - first_hour)
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    n = len(first)
    kinds, values = cols.kinds[rows], cols.values[rows]
    conversation = (kinds == _CALL_KIND) | (kinds == _CHAT_KIND)
    chat = conversation & cols.chats[rows]
    engaged = conversation & (values >= engaged_seconds)

    def count(where: npt.NDArray[np.bool_] | None = None) -> list[int]:
        picked = group if where is None else group[where]
        return np.bincount(picked, minlength=n).tolist()  # type: ignore[no-any-return]

    def total(where: npt.NDArray[np.bool_]) -> list[float]:
        return np.bincount(group[where], weights=values[where],  # type: ignore[no-any-return]
                           minlength=n).tolist()

    events, calls, chats = count(), count(conversation & ~chat), count(chat)
    engaged_n, chat_engaged = count(engaged), count(engaged & chat)
    duration, chat_duration = total(conversation), total(chat)
    at = rows[first]
    campaigns = [*cols.campaigns, None]  # code -1: no campaign
    out = [(cols.tenants[t], campaigns[c], h, Measures(e, ca, ch, d, en, {}, {}, {}, cd, ce))
           for t, c, h, e, ca, ch, d, en, cd, ce in zip(
               cols.tenant[at].tolist(), cols.campaign[at].tolist(),
               (cols.occurred[at] // HOUR_US).tolist(), events, calls, chats, duration, engaged_n,
               chat_duration, chat_engaged, strict=True)]
    intents = kinds == _INTENT_KIND
    for g, label, n_intents in _pairs(group[intents], cols.label[rows][intents], None):
        out[g][3].intents[cols.labels[label]] = int(n_intents)
    usage = kinds == _USAGE_KIND
    for g, category, amount in _pairs(group[usage], cols.category[rows][usage], values[usage]):
        out[g][3].usage[cols.categories[category]] = float(amount)
    return out


def _pairs(group: npt.NDArray[np.intp], code: npt.NDArray[np.int32],
           weights: npt.NDArray[np.float64] | None) -> list[tuple[int, int, float]]:
    """(group, code, count or sum of `weights`) for each pair present, in pair order."""
    if not len(group):
        return []
    width = int(code.max()) + 1
    pairs, inverse = np.unique(group.astype(np.int64) * width + code, return_inverse=True)
    sums = np.bincount(inverse, weights=weights, minlength=len(pairs))
    return [(int(p // width), int(p % width), s)
            for p, s in zip(pairs.tolist(), sums.tolist(), strict=True)]


# ---- SQL dialect --------------------------------------------------------------------
# Each statement reads the relation `events` (one tenant's events, deduplicated) and
# returns the columns of `Measures` for each value of the grouping expression `g`
# (NULL for a total, `campaign_id`, or a local time bucket from `rollups.zones`). `where` is a
# filter on the event columns built by the caller with bound parameters only. `rollups`
# never runs them; `api.lake` does.

def first_copies_sql(source: str, columns: str = "*", where: str = "TRUE",
                     key: str = "tenant_id, id") -> str:
    """`source` with one row per event (contract section 5): of the copies of one
    (`tenant_id`, `id`), the first by `kafka_partition`, `kafka_offset`.

    DuckDB's dialect; `key` is `id` alone over one tenant's files. A window per id
    rather than DISTINCT ON ... ORDER BY, which sorts every row: about a fifth faster.
    """
    return (f"SELECT {columns} FROM {source} WHERE {where} QUALIFY row_number() OVER "
            f"(PARTITION BY {key} ORDER BY kafka_partition, kafka_offset) = 1")


PORTABLE_FIRST_COPIES_SQL = (
    "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY tenant_id, id "
    "ORDER BY kafka_partition, kafka_offset) AS rn FROM {table}) WHERE rn = 1")
"""The same deduplication in SQL any engine runs (Trino, Spark, ClickHouse, DuckDB),
for analysts reading the lake or the Iceberg table `pulse.events` without Pulse."""

CONVERSATION_SQL = "event_type IN ('call_ended', 'chat_ended')"
CHANNEL_SQL = (
    "coalesce(channel, CASE event_type WHEN 'call_ended' THEN 'call' "
    "WHEN 'chat_ended' THEN 'chat' END)"
)


def exact_sum(where: str) -> str:
    """SQL summing `value` over the rows matching `where` to the same bits whatever
    order DuckDB's threads add them in (two API processes must answer alike): exact, as
    128-bit decimals of billionths, for every value below 1e18; the rare larger ones
    (the contract allows any finite number) are added as doubles."""
    small = "CASE WHEN abs(value) < 1e18 THEN value ELSE 0 END"  # cast before FILTER
    return (f"(coalesce(sum(CAST({small} AS DECIMAL(38, 9))) FILTER (WHERE {where}), 0)"
            f"::DOUBLE + coalesce(sum(value) FILTER (WHERE abs(value) >= 1e18 AND {where}), "
            f"0.0))")


MEASURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("events", "count(*)"),
    ("calls", f"count(*) FILTER (WHERE {CONVERSATION_SQL} AND {CHANNEL_SQL} <> 'chat')"),
    ("chats", f"count(*) FILTER (WHERE {CONVERSATION_SQL} AND {CHANNEL_SQL} = 'chat')"),
    ("duration_s", exact_sum(CONVERSATION_SQL)),
    ("engaged", f"count(*) FILTER (WHERE {CONVERSATION_SQL} AND value >= $engaged)"),
    ("chat_duration_s",
     exact_sum(f"{CONVERSATION_SQL} AND {CHANNEL_SQL} = 'chat'")),
    ("chat_engaged",
     f"count(*) FILTER (WHERE {CONVERSATION_SQL} AND {CHANNEL_SQL} = 'chat' "
     "AND value >= $engaged)"),
)
"""Each scalar field of `Measures` and the aggregate computing it, so the SQL and the
reading of its rows come from one table (`measures_sql`, `set_scalars`)."""

MEASURE_NAMES = tuple(name for name, _ in MEASURE_COLUMNS)


CONVERSATION_NAMES = ("calls", "chats", "duration_s", "engaged")
"""What a conversation-only answer needs (heatmap, breakdowns, conversation series)."""


def measures_sql(group: str, where: str, names: tuple[str, ...] = MEASURE_NAMES) -> str:
    """Columns `g`, then `names` (of `MEASURE_NAMES`) in order, one row per value of
    `group`."""
    sql_of = dict(MEASURE_COLUMNS)
    columns = ",\n       ".join(f"{sql_of[name]} AS {name}" for name in names)
    return f"""
SELECT {group} AS g,
       {columns}
FROM events WHERE {where}
GROUP BY g"""


def set_scalars(m: Measures, values: tuple[object, ...],
                names: tuple[str, ...] = MEASURE_NAMES) -> None:
    """Set the scalar fields `names` of `m` from a row's columns of them."""
    for name, value in zip(names, values, strict=True):
        setattr(m, name, value)


def intents_sql(group: str, where: str) -> str:
    return f"""
SELECT {group} AS g, label, count(*) AS n
FROM events WHERE event_type = 'intent_detected' AND {where}
GROUP BY g, label"""


def usage_sql(group: str, where: str) -> str:
    return f"""
SELECT {group} AS g, category, {exact_sum('TRUE')} AS amount
FROM events WHERE event_type = 'usage' AND {where}
GROUP BY g, category"""


# ---- summaries: the same measures, summed ahead of time ----------------------------
# `pulse compact` sums each day's deduplicated events per (hour, campaign) into rows of
# `SUMMED_NAMES` (`summary_rows_sql`); the API adds such rows to the events it still
# reads raw, in one statement (`combined_sql`). Sums of `value` stay exact across both:
# the part below 1e18 is summed as DECIMAL(38, 9) and turned into a double only at the
# very end, as `exact_sum` does, so an answer has the same bits whichever rows were
# summed ahead of time.

KIND_SCALARS, KIND_INTENT, KIND_USAGE = 0, 1, 2
"""What a summed row holds: the scalar measures, one intent label's count (`events`)
or one usage category's amount (`amount_exact`, `amount_large`)."""

HOUR_START_SQL = (f"(epoch_us(occurred_at) - ((epoch_us(occurred_at) % {HOUR_US}) + {HOUR_US}) "
                  f"% {HOUR_US})")
"""The start (µs) of the UTC hour holding `occurred_at`, also before 1970."""
_EXACT = "CAST(CASE WHEN abs(value) < 1e18 THEN value ELSE 0 END AS DECIMAL(38, 9))"
_LARGE = "CASE WHEN abs(value) >= 1e18 THEN value ELSE 0.0 END"
_FLAGS = (f"{CONVERSATION_SQL} AS conversation, "
          f"{CONVERSATION_SQL} AND {CHANNEL_SQL} = 'chat' AS chat, {_EXACT} AS exact, "
          f"{_LARGE} AS large")
"""What an event's parts are made of, computed once per event."""

SUMMED: tuple[tuple[str, str, str], ...] = (
    ("events", "1", "BIGINT"),
    ("calls", "(conversation AND NOT chat)::BIGINT", "BIGINT"),
    ("chats", "chat::BIGINT", "BIGINT"),
    ("duration_exact", "CASE WHEN conversation THEN exact END", "DECIMAL(38, 9)"),
    ("duration_large", "CASE WHEN conversation THEN large END", "DOUBLE"),
    ("engaged", "(conversation AND value >= $engaged)::BIGINT", "BIGINT"),
    ("chat_duration_exact", "CASE WHEN chat THEN exact END", "DECIMAL(38, 9)"),
    ("chat_duration_large", "CASE WHEN chat THEN large END", "DOUBLE"),
    ("chat_engaged", "(chat AND value >= $engaged)::BIGINT", "BIGINT"),
    ("amount_exact", "NULL", "DECIMAL(38, 9)"),
    ("amount_large", "NULL", "DOUBLE"),
)
"""(column, one event's part of it in a scalar row, from `_FLAGS`; SQL type): the
additive columns of a summed row, the same sums as `MEASURE_COLUMNS` (a conversation's
channel is never null, so `NOT chat` is `CHANNEL_SQL <> 'chat'`). An intent row counts
in `events`; a usage row sums in `amount_*`."""

SUMMED_NAMES = tuple(name for name, _, _ in SUMMED)


def contributions_sql(keys: str, where: str, columns: tuple[str, ...] = SUMMED_NAMES,
                      breakdowns: bool = True) -> str:
    """One row per event of `events` matching `where` (and, with `breakdowns`, one more
    per intent or usage event): the select list `keys`, `kind`, `key` and its part of
    each `SUMMED` column of `columns` (missing: null)."""
    scalars = ", ".join(f"CAST({sql} AS {sql_type}) AS {name}"
                        for name, sql, sql_type in SUMMED if name in columns)
    sql = f"""
SELECT {keys}, {KIND_SCALARS} AS kind, NULL::VARCHAR AS key, {scalars}
FROM (SELECT *, {_FLAGS} FROM events WHERE {where})"""
    if not breakdowns:
        return sql
    return sql + f"""
UNION ALL BY NAME
SELECT {keys}, {KIND_INTENT} AS kind, label AS key, 1::BIGINT AS events
FROM events WHERE event_type = 'intent_detected' AND {where}
UNION ALL BY NAME
SELECT {keys}, {KIND_USAGE} AS kind, category AS key, 1::BIGINT AS events,
       {_EXACT} AS amount_exact, {_LARGE}::DOUBLE AS amount_large
FROM events WHERE event_type = 'usage' AND {where}"""


SUMMED_TOTALS = ", ".join(
    f"sum({name})::BIGINT AS {name}" if sql_type == "BIGINT" else
    f"sum({name}) AS {name}" for name, _, sql_type in SUMMED)
"""The sums of summed rows, still summable (a day's rows are summed again later)."""


def summary_rows_sql() -> str:
    """A day's summed rows from `events` (that day's events, deduplicated): per hour (µs
    of its start), campaign, kind and key."""
    return f"""
SELECT hour, campaign_id, kind, key, {SUMMED_TOTALS}
FROM ({contributions_sql(f"{HOUR_START_SQL} AS hour, campaign_id", "TRUE")})
GROUP BY hour, campaign_id, kind, key"""


SUMMED_CONVERSATIONS_SQL = f"kind = {KIND_SCALARS} AND calls + chats > 0"
"""The summed rows of conversations: those the events matching `CONVERSATION_SQL` give."""


def daily_rows_sql(hourly: str) -> str:
    """The summed rows of relation `hourly` summed again per UTC day (`hour`: the day's
    start)."""
    day = f"(hour - (((hour % {DAY_US}) + {DAY_US}) % {DAY_US}))"
    return f"""
SELECT {day} AS hour, campaign_id, kind, key, {SUMMED_TOTALS}
FROM {hourly} GROUP BY ALL"""


def _final(exact: str, large: str) -> str:
    return f"coalesce(sum({exact}), 0)::DOUBLE + coalesce(sum({large}), 0.0)"


FINAL_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("events", "coalesce(sum(events), 0)::BIGINT", ("events",)),
    ("calls", "coalesce(sum(calls), 0)::BIGINT", ("calls",)),
    ("chats", "coalesce(sum(chats), 0)::BIGINT", ("chats",)),
    ("duration_s", _final("duration_exact", "duration_large"),
     ("duration_exact", "duration_large")),
    ("engaged", "coalesce(sum(engaged), 0)::BIGINT", ("engaged",)),
    ("chat_duration_s", _final("chat_duration_exact", "chat_duration_large"),
     ("chat_duration_exact", "chat_duration_large")),
    ("chat_engaged", "coalesce(sum(chat_engaged), 0)::BIGINT", ("chat_engaged",)),
)
"""`MEASURE_NAMES` from summed rows, each with the `SUMMED` columns it sums: the same
numbers `MEASURE_COLUMNS` give from the events themselves."""


_FINAL_OF = {final[0]: final for final in FINAL_COLUMNS}


def combined_sql(raw_group: str | None, raw_where: str, summary_group: str | None,
                 summary_where: str, summary: str, names: tuple[str, ...] = MEASURE_NAMES
                 ) -> str:
    """Per `g`, `kind` and `key`: the `FINAL_COLUMNS` of `names`, then a usage category's
    amount (an intent's count is in `events`); from the events of `events` matching
    `raw_where` (grouped by `raw_group`) and the summed rows of relation `summary`
    matching `summary_where` (grouped by `summary_group`, an expression of their
    columns). A None group leaves that side out.

    Intents and usage come only with every measure (`MEASURE_NAMES`, an overview); an
    answer of fewer (`CONVERSATION_NAMES`: heatmaps, breakdowns, conversation series)
    sums only the columns it shows, which took a tenth off such an answer over 30
    days of raw events (`pulse bench query`)."""
    breakdowns = names == MEASURE_NAMES
    finals = [_FINAL_OF[name] for name in names]
    columns = tuple(part for _, _, parts in finals for part in parts)
    if breakdowns:
        columns += ("amount_exact", "amount_large")
    parts = []
    if raw_group is not None:
        parts.append("SELECT * FROM ("
                     + contributions_sql(f"{raw_group} AS g", raw_where, columns, breakdowns)
                     + ")")
    if summary_group is not None:
        parts.append(f"SELECT {summary_group} AS g, kind, key, {', '.join(columns)} "
                     f"FROM {summary} WHERE {summary_where}")
    amount = _final("amount_exact", "amount_large") if breakdowns else "NULL"
    return f"""
SELECT g, kind, key, {", ".join(f"{sql} AS {name}" for name, sql, _ in finals)},
       {amount} AS amount
FROM ({" UNION ALL BY NAME ".join(parts)})
GROUP BY g, kind, key"""


def set_combined(out: dict[Any, Measures], row: tuple[Any, ...],
                 names: tuple[str, ...] = MEASURE_NAMES) -> None:
    """Add a row of `combined_sql(..., names)` to `out` (by its group)."""
    g, kind, key, *values = row
    m = out.setdefault(g, Measures())
    if kind == KIND_SCALARS:
        set_scalars(m, tuple(values[:-1]), names)
    elif kind == KIND_INTENT:
        m.intents[key] = int(values[0])
    else:
        m.usage[key] = float(values[-1])


SPREAD_SQL = """
SELECT count(*) FROM (
    SELECT id FROM day_rows GROUP BY id
    HAVING count(DISTINCT (occurred_at, campaign_id, event_type)) > 1)"""
"""How many ids of one day's rows (relation `day_rows`, every copy) have copies at
different times, or of different campaigns or event types. Such a day is never
answered from its summed rows: a range's filter may keep one copy and drop another
(the raw answer then counts the copy it keeps), which rows summed after deduplication
cannot know. In any other day a filter keeps all copies of an id or none, so the day's
first copies stand for it (`api.summaries` holds them for a range's partial hours)."""
