"""Every metric of contract section 3, defined once, in both dialects side by side.

An hour of one tenant and campaign is summarized by additive `Measures`. The worker
folds events into them in Python (`fold_event`); the API computes the very same
columns from the lake with SQL (`MEASURE_SQL`, `INTENT_SQL`, `USAGE_SQL`,
`FUNNEL_SQL`). Everything a report shows (rates, shares, conversions) is then derived
from `Measures` by `rollups.report`, whichever side produced them. The parity tests
run both dialects over the same random streams against a brute-force oracle.
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

    @property
    def conversations(self) -> int:
        return self.calls + self.chats

    def add(self, other: Measures) -> None:
        self.events += other.events
        self.calls += other.calls
        self.chats += other.chats
        self.duration_s += other.duration_s
        self.engaged += other.engaged
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
        # The normalized channel is the field when the event carried it, else the
        # type's default (call_ended -> call, chat_ended -> chat).
        if event.channel == "chat":
            m.chats += 1
        else:
            m.calls += 1
        value = event.value or 0.0
        m.duration_s += value
        if value >= engaged_seconds:
            m.engaged += 1
    elif kind == "intent_detected":
        label = event.label or ""
        m.intents[label] = m.intents.get(label, 0) + 1
    elif kind == "usage":
        category = event.category or ""
        m.usage[category] = m.usage.get(category, 0.0) + (event.value or 0.0)


# ---- SQL dialect --------------------------------------------------------------------
# Each statement reads the relation `events` (one tenant's events, deduplicated) and
# returns the columns of `Measures` for each value of the grouping expression `g`
# (NULL for a total, `campaign_id`, or a time bucket from `bucket_sql`). `where` is a
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


def bucket_sql(column: str, width_us: int) -> str:
    """Start (µs since the epoch) of the UTC bucket holding `column`, floor also before 1970."""
    us = f"epoch_us({column})"
    return f"({us} - ((({us} % {width_us}) + {width_us}) % {width_us}))"


def measures_sql(group: str, where: str) -> str:
    return f"""
SELECT {group} AS g,
       count(*) AS events,
       count(*) FILTER (WHERE {CONVERSATION_SQL} AND {CHANNEL_SQL} <> 'chat') AS calls,
       count(*) FILTER (WHERE {CONVERSATION_SQL} AND {CHANNEL_SQL} = 'chat') AS chats,
       coalesce(sum(value) FILTER (WHERE {CONVERSATION_SQL}), 0.0) AS duration_s,
       count(*) FILTER (WHERE {CONVERSATION_SQL} AND value >= $engaged) AS engaged
FROM events WHERE {where}
GROUP BY g"""


def intents_sql(group: str, where: str) -> str:
    return f"""
SELECT {group} AS g, label, count(*) AS n
FROM events WHERE event_type = 'intent_detected' AND {where}
GROUP BY g, label"""


def usage_sql(group: str, where: str) -> str:
    return f"""
SELECT {group} AS g, category, sum(value) AS amount
FROM events WHERE event_type = 'usage' AND {where}
GROUP BY g, category"""


def funnel_sql(steps: tuple[str, ...], group: str, t1_where: str) -> tuple[str, dict[str, str]]:
    """Journeys by the bucket `group` of their t1 and the step they reached.

    A journey is (campaign_id, customer_id); its t1 is its earliest S1 ever, and it has
    reached step k when it has had every one of S1..Sk, at any time and in any order.
    `events` must hold the journeys' funnel_step events of all time; `t1_where` filters
    on the column `t1`, `group` may use it too.
    """
    params = {f"s{i + 1}": step for i, step in enumerate(steps)}
    has = ", ".join(f"bool_or(label = $s{i + 1}) AS has{i + 1}" for i in range(len(steps)))
    cases = " ".join(f"WHEN NOT has{k + 1} THEN {k}" for k in range(1, len(steps)))
    reached = f"CASE {cases} ELSE {len(steps)} END" if cases else "1"
    sql = f"""
SELECT {group} AS g, {reached} AS reached, count(*) AS n
FROM (
    SELECT min(occurred_at) FILTER (WHERE label = $s1) AS t1, {has}
    FROM events WHERE event_type = 'funnel_step'
    GROUP BY campaign_id, customer_id
) AS journeys
WHERE t1 IS NOT NULL AND ({t1_where})
GROUP BY g, reached"""
    return sql, params
