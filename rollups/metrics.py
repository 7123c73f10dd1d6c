"""Every metric of contract section 3, defined once, in both dialects side by side.

An hour of one tenant and campaign is summarized by additive `Measures`. The worker
folds events into them in Python (`fold_event`); the API computes the very same
columns from the lake with SQL (`measures_sql`, `intents_sql`, `usage_sql`; the
funnel's journeys in `rollups.reach`). Everything a report shows (rates, shares,
conversions) is then derived from `Measures` by `rollups.report`, whichever side
produced them. The parity tests run both dialects over the same random streams against
a brute-force oracle.
"""

from __future__ import annotations

import msgspec

from pulse.schemas.events import CONVERSATION_TYPES, Event


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
        for label, n in other.intents.items():
            self.intents[label] = self.intents.get(label, 0) + n
        for category, amount in other.usage.items():
            self.usage[category] = self.usage.get(category, 0.0) + amount
        for k, n in other.funnel.items():
            total = self.funnel.get(k, 0) + n
            if total:
                self.funnel[k] = total
            else:
                self.funnel.pop(k, None)

    def is_empty(self) -> bool:
        return not self.events and not self.funnel


def fold_event(m: Measures, event: Event, engaged_seconds: float) -> None:
    """Add one unique event to the measures of its hour (Python dialect)."""
    m.events += 1
    kind = event.event_type
    if kind in CONVERSATION_TYPES:
        value = event.value or 0.0
        engaged = value >= engaged_seconds
        # The normalized channel is the field when the event carried it, else the
        # type's default (call_ended -> call, chat_ended -> chat).
        if event.channel == "chat":
            m.chats += 1
            m.chat_duration_s += value
            m.chat_engaged += engaged
        else:
            m.calls += 1
        m.duration_s += value
        m.engaged += engaged
    elif kind == "intent_detected":
        label = event.label or ""
        m.intents[label] = m.intents.get(label, 0) + 1
    elif kind == "usage":
        category = event.category or ""
        m.usage[category] = m.usage.get(category, 0.0) + (event.value or 0.0)


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
