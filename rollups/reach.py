"""Funnel options of contract section 3: when a journey reached each step, in both dialects.

For a journey and step j, E_j are the times of its `funnel_step` events labelled S_j,
and t1 = min E_1. Under `order=any` reach(k) is the latest of min E_1 .. min E_k (the
moment it first had all of S1..Sk); under `order=sequence` g_1 = t1 and g_j is the
earliest time in E_j at or after g_(j-1). With `window` a journey has reached step k
only if reach(k) - t1 <= window. Nothing here changes entry: t1, the journeys counted
and the step-1 count are the same under every option.

The Python functions define it one journey at a time; `journeys_sql` computes the same
for every journey of a tenant in DuckDB. Either way reach(k) >= reach(k-1), and reach(k)
exists only if reach(k-1) does, so the steps a journey reached are always a prefix.
Durations are integer microseconds; `summarize` gives time to convert's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

ORDERS = ("any", "sequence")
US_PER_S = 1_000_000
MAX_WINDOW_S = 316_000_000_000
"""Longer than any two event times can be apart (years 1 to 9999): any window beyond it
is the same as none."""


@dataclass(frozen=True)
class FunnelOptions:
    order: str = "any"
    window_s: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {self.order!r}")
        if self.window_s is not None and not 1 <= self.window_s <= MAX_WINDOW_S:
            raise ValueError(f"window must be 1..{MAX_WINDOW_S} seconds, not {self.window_s}")

    @property
    def is_default(self) -> bool:
        """The definition the hourly rollups hold (any order, no window)."""
        return self.order == "any" and self.window_s is None

    @property
    def window_us(self) -> int | None:
        return None if self.window_s is None else self.window_s * US_PER_S


DEFAULT = FunnelOptions()


def reach_times(step_times: Sequence[Iterable[int]], order: str) -> list[int | None]:
    """reach(1..n) of one journey from E_1..E_n (each in any order); None: not reached."""
    out: list[int | None] = []
    previous: int | None = None
    for j, times in enumerate(step_times):
        ordered = sorted(times)
        if not ordered or (j and previous is None):
            previous = None
        elif order == "any":
            previous = ordered[0] if previous is None else max(previous, ordered[0])
        else:
            previous = next((t for t in ordered if previous is None or t >= previous), None)
        out.append(previous)
    return out


def reached_step(reach: Sequence[int | None], window_us: int | None) -> int:
    """The highest step reached (0 without S1): reach(k) exists, within the window."""
    if not reach or reach[0] is None:
        return 0
    t1 = reach[0]
    k = 0
    for r in reach:
        if r is None or (window_us is not None and r - t1 > window_us):
            break
        k += 1
    return k


def dropped_at(reached: int, n_steps: int) -> int | None:
    """The step a counted journey dropped off at (reached k-1, not k), if any."""
    return reached + 1 if 1 <= reached < n_steps else None


def lower_median_index(n: int) -> int:
    return (n - 1) // 2


def p90_index(n: int) -> int:
    """Nearest rank: ceil(0.9 n) - 1, in integers (0.9 n in floating point can miss)."""
    return -(-9 * n // 10) - 1


class Durations(msgspec.Struct, frozen=True):
    """Time to convert to one step: how many journeys, and their durations' statistics."""

    count: int
    total_us: int
    median_us: int | None
    """The lower median: index (n-1) // 2 of the sorted durations."""
    p90_us: int | None
    """Nearest rank: index ceil(0.9 n) - 1."""


def summarize(durations_us: Iterable[int]) -> Durations:
    ordered = sorted(durations_us)
    n = len(ordered)
    if not n:
        return Durations(0, 0, None, None)
    return Durations(n, sum(ordered), ordered[lower_median_index(n)], ordered[p90_index(n)])


# ---- SQL dialect ----------------------------------------------------------------------
# `journeys_sql` reads the relation `events` (one tenant's funnel_step events of all time,
# deduplicated, filtered by campaign if asked) and returns one row per journey with S1:
# campaign_id, customer_id, t1 (timestamp), reached, and d2..dn, the microseconds from t1
# to reach(k) when the journey reached step k (NULL otherwise). It runs in two stages, so
# that `pulse compact` can keep the first one's rows (`streams.summaries`): per journey
# its step times (`step_times_sql`), then what they reached (`reached_sql`).


def _step_params(steps: tuple[str, ...]) -> dict[str, str]:
    return {f"s{i + 1}": step for i, step in enumerate(steps)}


def step_times_sql(steps: tuple[str, ...], lists: bool, source: str = "events") -> str:
    """Per journey of relation `source` (with campaign_id, customer_id, event_type, label,
    occurred_at): t1, the earliest time of S1 (NULL without one); e2..en, the earliest
    time (µs) of each later step; with `lists` also s2..sn, all of its times, ascending
    (what `order=sequence` needs). Every journey with any step, t1 or not: a later event
    may bring its S1 (`merge_step_times_sql`). Takes the step labels as $s1..$sn."""
    n = len(steps)
    labels = ", ".join(f"$s{k}" for k in range(1, n + 1))
    columns = ["min(occurred_at) FILTER (WHERE label = $s1) AS t1"]
    columns += [f"min(us) FILTER (WHERE label = $s{k}) AS e{k}" for k in range(2, n + 1)]
    if lists:
        columns += [f"list(us ORDER BY us) FILTER (WHERE label = $s{k}) AS s{k}"
                    for k in range(2, n + 1)]
    return f"""
SELECT campaign_id, customer_id, {", ".join(columns)}
FROM (SELECT campaign_id, customer_id, label, occurred_at, epoch_us(occurred_at) AS us
      FROM {source} WHERE event_type = 'funnel_step' AND label IN ({labels}))
GROUP BY campaign_id, customer_id"""


def merge_step_times_sql(n_steps: int, source: str, lists: bool) -> str:
    """`step_times_sql`'s rows of relation `source`, one per journey: several rows of a
    journey (its times from different events) become the row of all of them."""
    columns = ["min(t1) AS t1", *(f"min(e{k}) AS e{k}" for k in range(2, n_steps + 1))]
    if lists:
        columns += [f"list_sort(flatten(list(s{k}) FILTER (WHERE s{k} IS NOT NULL))) AS s{k}"
                    for k in range(2, n_steps + 1)]
    return f"""
SELECT campaign_id, customer_id, {", ".join(columns)}
FROM {source} GROUP BY campaign_id, customer_id"""


def reached_sql(n_steps: int, options: FunnelOptions, source: str
                ) -> tuple[str, dict[str, object]]:
    """The journeys with S1 among the step times of relation `source` (`step_times_sql`'s
    columns; s2..sn needed under `order=sequence`): campaign_id, customer_id, t1,
    reached, d2..dn."""
    n = n_steps
    params: dict[str, object] = {}
    if options.order == "any":
        chain = [f"CASE WHEN e{k} IS NULL OR r{k - 1} IS NULL THEN NULL "
                 f"ELSE greatest(r{k - 1}, e{k}) END AS r{k}"
                 for k in range(2, n + 1)]
    else:
        chain = [f"list_filter(s{k}, lambda x: x >= r{k - 1})[1] AS r{k}"
                 for k in range(2, n + 1)]
    within = "TRUE"
    if options.window_us is not None:
        within = "{r} - r1 <= $window_us"
        params["window_us"] = options.window_us
    reached = " + ".join(["1"] + [f"(r{k} IS NOT NULL AND {within.format(r=f'r{k}')})::INTEGER"
                                  for k in range(2, n + 1)])
    durations = "".join(f", CASE WHEN reached >= {k} THEN r{k} - r1 END AS d{k}"
                        for k in range(2, n + 1))
    sql = f"""
SELECT campaign_id, customer_id, t1, reached{durations}
FROM (
    SELECT *, {", ".join(["epoch_us(t1) AS r1", *chain, f"{reached} AS reached"])}
    FROM {source} WHERE t1 IS NOT NULL
)"""
    return sql, params


def journeys_sql(steps: tuple[str, ...], options: FunnelOptions) -> tuple[str, dict[str, object]]:
    """Every journey with S1 of relation `events`, from its funnel_step events."""
    times = step_times_sql(steps, lists=options.order == "sequence")
    sql, params = reached_sql(len(steps), options, f"({times})")
    return sql, {**_step_params(steps), **params}


def step_params(steps: tuple[str, ...]) -> dict[str, object]:
    """The parameters `step_times_sql` takes."""
    return dict(_step_params(steps))


def time_to_convert_sql(n_steps: int, journeys: str) -> str:
    """Per step k >= 2, over the journeys of relation `journeys` that reached it: count,
    the sum of the durations, the lower median and the nearest-rank p90 (microseconds)."""
    parts = [f"""
SELECT {k} AS step, count(d{k}) AS n, coalesce(sum(d{k}), 0) AS total_us,
       list_sort(list(d{k}) FILTER (WHERE d{k} IS NOT NULL))[(count(d{k}) - 1) // 2 + 1]
           AS median_us,
       list_sort(list(d{k}) FILTER (WHERE d{k} IS NOT NULL))[(9 * count(d{k}) + 9) // 10]
           AS p90_us
FROM {journeys}""" for k in range(2, n_steps + 1)]
    return "\nUNION ALL".join(parts) if parts else "SELECT NULL AS step WHERE FALSE"


OUTCOME_SQL = {"reached": "reached >= $step", "dropped": "reached = $step - 1"}
"""The journeys of `journeys_sql` at `$step`: counted there, or dropped off at it."""
ORDER_SQL = "t1, coalesce(campaign_id, ''), customer_id"
"""The customers' order: entry, then campaign (null first: no id is empty), customer."""
AFTER_SQL = ("(epoch_us(t1) > $after_t OR (epoch_us(t1) = $after_t AND (coalesce(campaign_id, "
             "'') > $after_c OR (coalesce(campaign_id, '') = $after_c AND customer_id > "
             "$after_u))))")
"""The journeys after ($after_t, $after_c, $after_u) in that order."""
