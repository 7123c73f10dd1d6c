"""The insight answers in `pulse bench query`: each lake-backed, beside hand-written DuckDB.

Each case asks one question of `benchmarks.query` (one tenant and campaign, a 30-day
unaligned range) through Pulse's own query path over an empty rollup store, and the
same question as an analyst who knows DuckDB writes it over the tenant's folder glob
(same dedup rule; ICU's time zones and `quantile_disc` where they fit). Both must give
the same numbers before anything is timed.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pulse.api.lake import LakeReader
from pulse.api.params import Range
from pulse.api.query import Query
from pulse.lakefs import LakeStore
from pulse.rollups import zones
from pulse.rollups.reach import FunnelOptions
from pulse.rollups.store import RollupStore
from pulse.rollups.windows import DAY_US
from pulse.schemas import lake
from pulse.settings import Settings

from .query import HandWritten, Question, Timing, ask_pulse, clock

WINDOW_S = 2 * 86_400
TZ = "Asia/Kolkata"
"""Half an hour off UTC: the rollups could not answer these even if they held the range."""


@dataclass(frozen=True)
class Case:
    name: str
    pulse: Callable[[Query, Question], Awaitable[Any]]
    hand: Callable[[HandWritten, Question], Any]


def _dedup(where: str, columns: str) -> str:
    return f"""
    SELECT {columns} FROM read_parquet($glob, hive_partitioning = true)
    WHERE {where}
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY kafka_partition, kafka_offset) = 1"""


STEPS_CTE = "WITH steps AS (" + _dedup(
    "event_type = 'funnel_step' AND campaign_id = $campaign",
    "customer_id, label, occurred_at") + ")"
CONVERSATIONS = ("campaign_id = $campaign AND event_type IN ('call_ended', 'chat_ended') "
                 "AND occurred_at >= $from AND occurred_at < $to "
                 "AND date BETWEEN $first_date::DATE AND $last_date::DATE")


# ---- funnel in sequence, with a window -------------------------------------------------

SEQUENCE_SQL = STEPS_CTE + f""", journeys AS (
    SELECT min(occurred_at) FILTER (WHERE label = 'picked_up') AS t1,
           list(occurred_at ORDER BY occurred_at) FILTER (WHERE label = 'interested') AS i,
           list(occurred_at ORDER BY occurred_at) FILTER (WHERE label = 'qualified') AS q
    FROM steps GROUP BY customer_id
), reach AS (
    SELECT t1, r2, list_filter(q, lambda t: t >= r2)[1] AS r3
    FROM (SELECT t1, q, list_filter(i, lambda t: t >= t1)[1] AS r2
          FROM journeys WHERE t1 >= $from AND t1 < $to)
)
SELECT CASE WHEN r2 IS NULL OR r2 > t1 + INTERVAL {WINDOW_S} SECOND THEN 0
            WHEN r3 IS NULL OR r3 > t1 + INTERVAL {WINDOW_S} SECOND THEN 1 ELSE 2 END AS k,
       count(*)
FROM reach GROUP BY k"""


async def sequence_pulse(query: Query, q: Question) -> dict[int, int]:
    answer = await query.total(q.tenant, q.campaign, Range(q.from_us, q.to_us), measures=False,
                               options=FunnelOptions("sequence", WINDOW_S))
    return {k: n for k, n in answer.value.funnel.items() if n}


def sequence_hand(hand: HandWritten, q: Question) -> dict[int, int]:
    return dict(run(hand, q, SEQUENCE_SQL))


# ---- time to convert -----------------------------------------------------------------

TIME_TO_CONVERT_SQL = STEPS_CTE + """, journeys AS (
    SELECT min(occurred_at) FILTER (WHERE label = 'picked_up') AS t1,
           min(occurred_at) FILTER (WHERE label = 'interested') AS i,
           min(occurred_at) FILTER (WHERE label = 'qualified') AS q
    FROM steps GROUP BY customer_id
), d AS (
    SELECT CASE WHEN i IS NOT NULL THEN epoch_us(greatest(t1, i)) - epoch_us(t1) END AS d2,
           CASE WHEN i IS NOT NULL AND q IS NOT NULL
                THEN epoch_us(greatest(t1, i, q)) - epoch_us(t1) END AS d3
    FROM journeys WHERE t1 >= $from AND t1 < $to
)
SELECT count(d2), sum(d2), quantile_disc(d2, 0.5), quantile_disc(d2, 0.9),
       count(d3), sum(d3), quantile_disc(d3, 0.5), quantile_disc(d3, 0.9)
FROM d"""


async def ttc_pulse(query: Query, q: Question) -> list[tuple]:
    answer = await query.time_to_convert(q.tenant, q.campaign, Range(q.from_us, q.to_us),
                                         FunnelOptions())
    return [(d.count, d.total_us if d.count else None, d.median_us, d.p90_us)
            for d in answer.value]


def ttc_hand(hand: HandWritten, q: Question) -> list[tuple]:
    row = run(hand, q, TIME_TO_CONVERT_SQL)[0]
    return [tuple(None if v is None else int(v) for v in row[:4]),
            tuple(None if v is None else int(v) for v in row[4:])]


# ---- who dropped off after the first step ----------------------------------------------

CUSTOMERS_SQL = STEPS_CTE + """, journeys AS (
    SELECT customer_id, min(occurred_at) FILTER (WHERE label = 'picked_up') AS t1,
           bool_or(label = 'interested') AS interested
    FROM steps GROUP BY customer_id
)
SELECT customer_id, epoch_us(t1) FROM journeys
WHERE t1 >= $from AND t1 < $to AND NOT interested
ORDER BY t1, customer_id LIMIT 100"""


async def customers_pulse(query: Query, q: Question) -> list[tuple]:
    answer = await query.customers(q.tenant, q.campaign, Range(q.from_us, q.to_us),
                                   FunnelOptions(), "dropped", 2, None, 101)
    rows, _ = answer.value
    return [(customer, t1) for _, customer, t1, _ in rows[:100]]


def customers_hand(hand: HandWritten, q: Question) -> list[tuple]:
    return run(hand, q, CUSTOMERS_SQL)


# ---- heatmap, time series and breakdown of conversations ------------------------------

HEATMAP_SQL = f"""
WITH e AS ({_dedup(CONVERSATIONS, "value, occurred_at")})
SELECT isodow(timezone('{TZ}', occurred_at)) - 1 AS weekday,
       hour(timezone('{TZ}', occurred_at)) AS hour,
       count(*), count(*) FILTER (WHERE value >= 30)
FROM e GROUP BY ALL"""


async def heatmap_pulse(query: Query, q: Question) -> dict[tuple[int, int], tuple[int, int]]:
    answer = await query.heatmap(q.tenant, q.campaign, Range(q.from_us, q.to_us),
                                 zones.zone(TZ))
    conversations, engaged = answer.value
    return {(cell // 24, cell % 24): (n, k)
            for cell, (n, k) in enumerate(zip(conversations, engaged, strict=True)) if n}


def heatmap_hand(hand: HandWritten, q: Question) -> dict[tuple[int, int], tuple[int, int]]:
    return {(d, h): (n, k) for d, h, n, k in run(hand, q, HEATMAP_SQL)}


DAYS_SQL = f"""
WITH e AS ({_dedup(CONVERSATIONS, "occurred_at")})
SELECT strftime(date_trunc('day', timezone('{TZ}', occurred_at)), '%Y-%m-%d'), count(*)
FROM e GROUP BY ALL"""


async def days_pulse(query: Query, q: Question) -> dict[str, int]:
    z = zones.zone(TZ)
    buckets = zones.buckets(z, q.from_us, q.to_us, DAY_US)
    answer = await query.series(q.tenant, q.campaign, Range(q.from_us, q.to_us), buckets,
                                "conversations")
    return {datetime.fromtimestamp(start / 1e6, UTC).astimezone(z).date().isoformat():
            m.conversations for start, m in answer.value.items() if m.conversations}


def days_hand(hand: HandWritten, q: Question) -> dict[str, int]:
    return dict(run(hand, q, DAYS_SQL))


BREAKDOWN_SQL = f"""
WITH e AS ({_dedup(CONVERSATIONS, "value, metadata")})
SELECT json_extract_string(metadata, '$.agent') AS agent, count(*),
       count(*) FILTER (WHERE value >= 30), sum(value)
FROM e GROUP BY agent"""


async def breakdown_pulse(query: Query, q: Question) -> dict[str | None, tuple]:
    answer = await query.breakdown(q.tenant, q.campaign, Range(q.from_us, q.to_us),
                                   "metadata.agent")
    return {v: (t.conversations, t.engaged, t.duration_s) for v, t in answer.value.items()}


def breakdown_hand(hand: HandWritten, q: Question) -> dict[str | None, tuple]:
    return {agent: (n, k, float(d)) for agent, n, k, d in run(hand, q, BREAKDOWN_SQL)}


# ---- an overview and its previous period ---------------------------------------------


def previous(q: Question) -> Question:
    return Question(q.tenant, q.campaign, 2 * q.from_us - q.to_us, q.from_us)


async def compare_pulse(query: Query, q: Question) -> list[Any]:
    return [await ask_pulse(query, q), await ask_pulse(query, previous(q))]


def compare_hand(hand: HandWritten, q: Question) -> list[Any]:
    return [hand.ask(q), hand.ask(previous(q))]


CASES = [
    Case("funnel_sequence_window", sequence_pulse, sequence_hand),
    Case("time_to_convert", ttc_pulse, ttc_hand),
    Case("funnel_customers", customers_pulse, customers_hand),
    Case("heatmap_kolkata", heatmap_pulse, heatmap_hand),
    Case("timeseries_days_kolkata", days_pulse, days_hand),
    Case("breakdown_metadata", breakdown_pulse, breakdown_hand),
    Case("overview_compare_previous", compare_pulse, compare_hand),
]


def run(hand: HandWritten, q: Question, sql: str) -> list[tuple]:
    """`sql` over the tenant's folder glob, with the question's parameters it names."""
    first_date, last_date = q.dates
    values: dict[str, Any] = {
        "glob": f"{hand.root}/{lake.tenant_dir(q.tenant)}/*/*.parquet", "campaign": q.campaign,
        "from": lake.us_to_datetime(q.from_us), "to": lake.us_to_datetime(q.to_us),
        "first_date": first_date, "last_date": last_date}
    return hand.db.execute(sql, {k: v for k, v in values.items() if f"${k}" in sql}).fetchall()


def agree(ours: Any, theirs: Any) -> bool:
    """Equal, floats to 1e-9 (sums in another order)."""
    if isinstance(ours, float) or isinstance(theirs, float):
        return isinstance(ours, int | float) and isinstance(theirs, int | float) and (
            math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-9))
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(agree(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        return len(ours) == len(theirs) and all(agree(a, b) for a, b in zip(ours, theirs,
                                                                               strict=True))
    if hasattr(ours, "__dataclass_fields__") and hasattr(theirs, "__dataclass_fields__"):
        return not ours.differences(theirs)
    return bool(ours == theirs)


async def measure_case(case: Case, query: Query, hand: HandWritten, q: Question, runs: int,
                       say: Callable[[str], None]) -> Timing:
    """Check both ways agree (on the warm-up), then time `runs` of each, alternating."""
    async def by_hand() -> Any:
        return case.hand(hand, q)

    _, ours = await clock(lambda: case.pulse(query, q))
    _, theirs = await clock(by_hand)
    if not agree(ours, theirs):
        raise RuntimeError(f"{case.name}: Pulse and the hand-written query disagree: "
                           f"{str(ours)[:500]} != {str(theirs)[:500]}")
    if not ours:
        raise RuntimeError(f"{case.name}: the answer is empty; agreeing proves nothing")
    pulse_times: list[float] = []
    hand_times: list[float] = []
    for _ in range(runs):
        pulse_times.append((await clock(lambda: case.pulse(query, q)))[0])
        hand_times.append((await clock(by_hand))[0])
    timing = Timing(ours, pulse_times, hand_times)
    say(f"  {case.name}: {timing.describe()}")
    return timing


async def measure_cases(root: str, q: Question, runs: int,
                        say: Callable[[str], None]) -> dict[str, Timing]:
    settings = Settings(lake=root)
    reader = LakeReader(LakeStore.open(root), settings.engaged_seconds, settings.funnel_steps)
    query = Query(RollupStore(), reader, settings.partitions)
    hand = HandWritten(root)
    try:
        return {case.name: await measure_case(case, query, hand, q, runs, say)
                for case in CASES}
    finally:
        reader.close()
        hand.close()
