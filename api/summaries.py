"""The API's side of the summaries `pulse compact` keeps in the lake.

`rollups.summaries` says what they hold and why an answer from them is the raw lake's
answer. Here: the newest generation of a tenant, taken with each listing of its event
files (`Listing`), so that the two always agree; the plans deciding which hours the
summed rows answer and whether the stored journeys do (`plan_measures`,
`plan_journeys`); and the files they need, held in memory (`Loaded`).

What they read is held in memory (`api.summary_cache`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pulse.lakefs import Entry, LakeStore, summary_folder
from pulse.rollups import metrics, reach, summaries
from pulse.rollups.summaries import Manifest, Span, SummaryDay
from pulse.schemas import lake

if TYPE_CHECKING:
    from .summary_cache import Loaded

Key = tuple[str, int, float]
"""A file as one listing saw it: path, size, modification time."""


@dataclass(frozen=True)
class TenantSummary:
    """A tenant's newest generation that fits the reader's settings."""

    tenant_id: str
    manifest: Manifest
    entries: dict[str, Entry]
    """Every file of the tenant's summaries folder."""
    days: dict[int, SummaryDay]

    def file(self, name: str) -> str:
        return f"{lake.generation_dir(self.tenant_id, self.manifest.generation)}/{name}"

    def keys_file(self, day: SummaryDay) -> str:
        return lake.summary_day_file(self.tenant_id, day.day, day.digest)


def read(store: LakeStore, tenant_id: str, engaged_seconds: float,
         steps: tuple[str, ...]) -> TenantSummary | None:
    """The tenant's newest generation, if it was made under these settings."""
    folder = summary_folder(store, tenant_id)
    found = folder.manifest(store, tenant_id)
    manifest = summaries.decode(found[1]) if found is not None else None
    if manifest is None or not manifest.fits(engaged_seconds, steps):
        return None
    return TenantSummary(tenant_id, manifest, folder.entries, {d.day: d for d in manifest.days})


@dataclass(frozen=True)
class Listing:
    """A tenant's live event files by day, and its summaries, listed together."""

    days: dict[int, list[str]]
    entries: dict[str, Entry]
    """The event files' and summary files' listing entries, by path."""
    summary: TenantSummary | None

    def files(self, days: set[int] | None = None) -> list[str]:
        """The live event files of `days` (all if None)."""
        return [rel for day, rels in sorted(self.days.items())
                if days is None or day in days for rel in rels]

    def key(self, rel: str) -> Key:
        entry = self.entries[rel]
        return rel, entry.size, entry.mtime

    @functools.cached_property
    def summarized(self) -> dict[int, SummaryDay]:
        """The summarized days whose live files are the ones they were computed from."""
        if self.summary is None:
            return {}
        out = {}
        for day, found in self.summary.days.items():
            names = tuple(sorted(rel.rpartition("/")[2] for rel in self.days.get(day, ())))
            if names == found.files:
                out[day] = found
        return out

    @functools.cached_property
    def _fresh(self) -> dict[int, list[str]]:
        out = {}
        for day, rels in self.days.items():
            found = self.summary.days.get(day) if self.summary is not None else None
            named = set(found.files) if found is not None else set()
            mine = [rel for rel in rels if rel.rpartition("/")[2] not in named]
            if mine:
                out[day] = mine
        return out

    def fresh(self, days: set[int] | None = None) -> list[str]:
        """The live event files of `days` (all if None) that no summarized day names."""
        return [rel for day, rels in sorted(self._fresh.items())
                if days is None or day in days for rel in rels]


# ---- measures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuresPlan:
    rest: list[Span]
    """What the events answer (the rest the summed rows answer)."""
    files: list[str]
    """The event files of `rest` in days not summarized."""
    edges: pa.Table | None = None
    """The events of `rest` in summarized days (a range's partial hours there), already
    deduplicated, with no id among `files`' (`plan_measures` made sure)."""
    summed: pa.Table | None = None
    """The summed rows answering the rest of the range."""


def plan_measures(listing: Listing, ranges: list[Span], loaded: Loaded,
                  by_day: bool) -> MeasuresPlan:
    """What answers `ranges`: summed rows for the whole hours of usable days (see the
    module doc of `rollups.summaries`), per day where a whole day is asked and `by_day`
    (the group needs no finer time), and the events for the rest."""
    scope = summaries.days_of(ranges)
    usable = {day for day in scope if (found := listing.summarized.get(day)) is not None
              and found.clean}
    if usable:
        usable -= loaded.hit_days(listing, listing.fresh(scope - usable))
    days, hours, rest = summaries.split(ranges, usable)
    if listing.summary is None or not (days or hours):
        return MeasuresPlan(list(ranges), listing.files(scope))
    key = listing.key(listing.summary.file(summaries.MEASURES_FILE))
    if not by_day:
        days, hours = [], sorted(days + hours)
    summed = pa.concat_tables([_slice(loaded.daily(key), "hour", days),
                               _slice(loaded.table(key), "hour", hours)])
    touched = summaries.days_of(rest)
    edges = [_slice(loaded.day_rows(listing, day), "occurred_at", rest)
             for day in sorted(touched & usable)]
    return MeasuresPlan(rest, listing.files(touched - usable),
                        pa.concat_tables(edges) if edges else None, summed)


def _slice(table: pa.Table, column: str, spans: list[Span]) -> pa.Table:
    """The rows of `table` (sorted by the µs or timestamp `column`) inside `spans`."""
    keys = table.column(column).cast(pa.int64()).to_numpy()
    parts = [table.slice(lo, hi - lo) for a, b in spans
             for lo, hi in [np.searchsorted(keys, [a, b]).tolist()] if hi > lo]
    return pa.concat_tables(parts) if parts else table.slice(0, 0)


# ---- journeys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JourneysPlan:
    files: list[str]
    """The event files newer than the generation, read raw."""
    journeys: pa.Table
    """The stored journeys that may count: those of the campaign asked, with t1 in range."""
    conflicts: pa.Table
    merged: pa.Table | None
    """When anything is merged into them (`files`, `conflicts`): the stored journeys of
    the campaign asked with any t1, or none (a merge may bring an earlier S1)."""


def plan_journeys(listing: Listing, loaded: Loaded, campaign: str | None,
                  t1: Span | None) -> JourneysPlan | None:
    """The stored journeys (those of `campaign` if not None, with t1 in `t1` if not None)
    and what to merge into them; None when they cannot answer (no generation, or an
    event file newer than it holds a funnel step of a summarized id)."""
    summary = listing.summary
    if summary is None:
        return None
    fresh = listing.fresh()
    if loaded.hits_steps(listing, fresh):
        return None
    conflicts = loaded.table(listing.key(summary.file(summaries.CONFLICTS_FILE)))
    journeys = loaded.journeys(listing.key(summary.file(summaries.JOURNEYS_FILE)))
    merged = journeys.rows(campaign, None) if fresh or conflicts.num_rows else None
    return JourneysPlan(fresh, journeys.rows(campaign, t1), conflicts, merged)


JOURNEYS, MERGED, CONFLICTS, SOURCE, EDGES = (
    "summary_journeys", "summary_merged", "summary_conflicts", "lake_files", "lake_edges")
"""The relations statements read: registered tables, and the event files (`SOURCE`)."""
_SAME = "s.customer_id = f.customer_id AND s.campaign_id IS NOT DISTINCT FROM f.campaign_id"


def journeys_sql(plan: JourneysPlan, steps: tuple[str, ...], options: reach.FunnelOptions,
                 campaign: bool) -> tuple[str, str, dict[str, object]]:
    """(a WITH clause, a relation of every journey with S1 as `reach.journeys_sql` gives
    it, their parameters), from the stored step times merged with those of the fresh
    events and the conflicts, each deduplicated as the raw path does (`campaign`: filter
    on `$campaign` first, as it does)."""
    n = len(steps)
    lists = options.order == "sequence"
    where = " AND campaign_id = $campaign" if campaign else ""
    stored = f"SELECT * FROM {JOURNEYS} WHERE TRUE{where}"
    if plan.merged is None:
        relation, params = reach.reached_sql(n, options, "times")
        return f"WITH times AS ({stored})", relation, params
    columns = ("id, kafka_partition, kafka_offset, campaign_id, customer_id, event_type, "
               "label, occurred_at")
    parts = [f"SELECT {columns} FROM {CONFLICTS}"]
    if plan.files:
        parts.append(f"SELECT {columns} FROM {SOURCE} WHERE event_type = 'funnel_step'")
    copies = metrics.first_copies_sql(
        f"({' UNION ALL '.join(parts)})", "campaign_id, customer_id, event_type, label, "
        "occurred_at", f"TRUE{where}", key="id")
    # Journeys without fresh steps are as stored (those with t1 in range: `JOURNEYS`);
    # the others are merged, whatever their stored t1 (`MERGED` holds them all). Found by
    # their keys' hashes first: `near` is a few rows, then compared key by key.
    both = (f"(SELECT s.* FROM near s SEMI JOIN fresh f ON {_SAME} "
            f"UNION ALL BY NAME SELECT * EXCLUDE (jk) FROM fresh)")
    prefix = f"""
WITH events AS MATERIALIZED ({copies}),
fresh AS MATERIALIZED (
    SELECT *, {summaries.JOURNEY_HASH_SQL} AS jk FROM ({reach.step_times_sql(steps, lists)})),
near AS MATERIALIZED (SELECT * FROM {MERGED} WHERE jk IN (SELECT jk FROM fresh)),
times AS (
    SELECT s.* FROM ({stored}) s ANTI JOIN fresh f ON s.jk = f.jk
    UNION ALL BY NAME SELECT s.* FROM near s ANTI JOIN fresh f ON {_SAME}
    UNION ALL BY NAME ({reach.merge_step_times_sql(n, both, lists)})
)"""
    relation, params = reach.reached_sql(n, options, "times")
    return prefix, relation, {**reach.step_params(steps), **params}


def bound(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The `params` that `sql` names (DuckDB refuses any other)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}
