"""`pulse compact`'s last step: each tenant's summaries (`rollups.summaries` says what
they hold and why they stay exact).

Per tenant, the days whose live event files are all final (the same rule as merging:
nothing may rewrite them) are summarized. A day whose files are those of the current
generation keeps its keys and summed rows; any other is read again, raw, and gets a
new keys file, named by the digest of its files and settings. Then, whenever any day
changed, a new generation is written: its summed rows, every journey's step times and
the conflicts, all whole, then its manifest, which makes it the one readers use. Only
after that are the files no manifest names any longer deleted, a little later, as
merged-away event files are: a reader that listed just before may still open them.

Killed anywhere, this leaves the previous generation in use (or none): a generation
without a manifest is never read, and the next run writes the next one whole. Every
run re-reads the keys of all summarized days (8 bytes per event, and the funnel steps),
since journeys and ids that cross days depend on all of them; only changed days are
read raw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from pulse.lakefs import Entry, LakeStore, lake_dirs, live, summary_folder, tenants
from pulse.rollups import metrics, reach, summaries
from pulse.rollups.summaries import Manifest, SummaryDay
from pulse.rollups.windows import DAY_US
from pulse.schemas import lake
from pulse.settings import Settings

log = logging.getLogger("pulse.summaries")

Final = Callable[[lake.LakeFile, Entry], bool]
"""Whether a live event file (its parsed name and listing) can no longer change."""
DAY_COLUMNS = ["id", "event_type", "campaign_id", "customer_id", "channel", "category",
               "label", "value", "occurred_at", "kafka_partition", "kafka_offset"]
"""What a day's summary reads of its events."""
MEASURES, JOURNEYS, CONFLICTS = (summaries.MEASURES_FILE, summaries.JOURNEYS_FILE,
                                 summaries.CONFLICTS_FILE)


@dataclass
class Totals:
    tenants: int = 0
    days_read: int = 0
    days_kept: int = 0
    generations: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Current:
    """What a tenant's summaries folder holds now."""

    manifest: Manifest | None
    """The newest generation with a manifest, if any (of another format: none)."""
    latest: int
    """The highest generation number seen, complete or not (0: none)."""
    files: list[str]
    """Every file under the folder."""


def summarize(store: LakeStore, settings: Settings, final: Final,
              delete_later: Callable[[list[str]], None]) -> Totals:
    """Bring every tenant's summaries in step with its final days."""
    totals = Totals()
    db = duckdb.connect(config={"threads": 2})
    try:
        for tenant in tenants(store):
            totals.tenants += 1
            try:
                _tenant(store, db, tenant, settings, final, delete_later, totals)
            except (OSError, duckdb.Error, pa.ArrowException) as exc:
                totals.errors += 1
                log.error("%s: summaries not updated (%s); answers read its events instead. "
                          "Move an unreadable file out of the lake, then run pulse compact "
                          "again", lake.summary_dir(tenant), exc)
    finally:
        db.close()
    return totals


def current(store: LakeStore, tenant: str) -> Current:
    """The tenant's newest complete generation of this format, and what else is there."""
    folder = summary_folder(store, tenant)
    found = folder.manifest(store, tenant)
    manifest = summaries.decode(found[1]) if found is not None else None
    return Current(manifest, folder.latest, list(folder.entries))


def _tenant(store: LakeStore, db: duckdb.DuckDBPyConnection, tenant: str,
            settings: Settings, final: Final, delete_later: Callable[[list[str]], None],
            totals: Totals) -> None:
    engaged, steps = settings.engaged_seconds, settings.funnel_steps
    days: dict[int, list[str]] = {}
    for folder, entries in lake_dirs(store, lake.tenant_dir(tenant)).items():
        rels = live(folder, entries)
        by_name = {e.name: e for e in entries}
        names = [rel.rpartition("/")[2] for rel in rels]
        parsed = [lake.parse_name(name) for name in names]
        if rels and all(f is not None and final(f, by_name[f.name]) for f in parsed):
            days[folder.day] = rels
    now = current(store, tenant)
    previous = now.manifest if now.manifest and now.manifest.fits(engaged, steps) else None
    kept = {d.day: d for d in previous.days} if previous else {}
    wanted = {day: summaries.digest([r.rpartition("/")[2] for r in rels], engaged, steps)
              for day, rels in days.items()}
    kept = {day: d for day, d in kept.items() if wanted.get(day) == d.digest}
    if not wanted:
        return  # no day final now (new files landed): readers already skip stale days
    if previous is not None and len(kept) == len(previous.days) == len(wanted):
        _delete_unnamed(now, previous, tenant, delete_later)
        return
    fresh_rows, fresh_days = [], []
    for day in sorted(set(wanted) - set(kept)):
        rows, spread = _read_day(store, db, tenant, day, days[day], wanted[day], engaged)
        fresh_rows.append(rows)
        fresh_days.append(SummaryDay(day, tuple(sorted(r.rpartition("/")[2]
                                                       for r in days[day])),
                                     wanted[day], spread, False))
    totals.days_read += len(fresh_days)
    totals.days_kept += len(kept)
    all_days = sorted([*kept.values(), *fresh_days], key=lambda d: d.day)
    generation = now.latest + 1
    written = lake.generation_dir(tenant, generation)
    crossing = _write_journeys(store, db, tenant, all_days, steps, written)
    measures = _measures(store, tenant, previous, set(kept), fresh_rows)
    store.put_parquet(f"{written}/{MEASURES}", measures)
    manifest = Manifest(summaries.FORMAT, generation, engaged, steps, tuple(
        msgspec.structs.replace(d, crossing=d.day in crossing) for d in all_days))
    store.put(f"{written}/{lake.MANIFEST}", summaries.encode(manifest))
    totals.generations += 1
    _delete_unnamed(current(store, tenant), manifest, tenant, delete_later)


def _read_day(store: LakeStore, db: duckdb.DuckDBPyConnection, tenant: str, day: int,
              rels: list[str], digest: str, engaged: float) -> tuple[pa.Table, bool]:
    """(the summed rows, spread) of one day from its events; writes its keys file."""
    tables = [store.read_table(rel, columns=DAY_COLUMNS) for rel in rels]
    cursor = db.cursor()
    try:
        cursor.register("day_rows", pa.concat_tables(tables, promote_options="default"))
        rows = _arrow(cursor, f"WITH events AS ({summaries.DAY_ROWS_SQL})"
                      + metrics.summary_rows_sql(), {"engaged": engaged})
        spread = bool(cursor.execute(metrics.SPREAD_SQL).fetchall()[0][0])
        keys = _arrow(cursor, summaries.KEYS_SQL)
    finally:
        cursor.close()
    store.put_parquet(lake.summary_day_file(tenant, day, digest), keys)
    return rows, spread


def _write_journeys(store: LakeStore, db: duckdb.DuckDBPyConnection, tenant: str,
                    days: list[SummaryDay], steps: tuple[str, ...], folder: str) -> set[int]:
    """Write the generation's journeys and conflicts from every day's keys; returns the
    days sharing an id with another day."""
    keys = pa.concat_tables([
        _with_day(store.read_table(lake.summary_day_file(tenant, d.day, d.digest)), d.day)
        for d in days], promote_options="default")
    cursor = db.cursor()
    try:
        cursor.register("keys", keys)
        crossing = {int(row[0]) for row in cursor.execute(summaries.CROSSING_SQL).fetchall()}
        cursor.execute(f"CREATE TEMP TABLE points AS {summaries.CONFLICTED_SQL}").fetchall()
        try:
            journeys = _arrow(cursor, summaries.journeys_sql(steps), reach.step_params(steps))
            conflicts = _arrow(cursor, f"SELECT {summaries.CONFLICT_COLUMNS} FROM points "
                                       "WHERE conflicted")
        finally:
            cursor.execute("DROP TABLE points").fetchall()
    finally:
        cursor.close()
    store.put_parquet(f"{folder}/{JOURNEYS}", journeys)
    store.put_parquet(f"{folder}/{CONFLICTS}", conflicts)
    return crossing


def _arrow(cursor: duckdb.DuckDBPyConnection, sql: str,
           params: dict[str, object] | None = None) -> pa.Table:
    """The rows of `sql` as Arrow (through a relation: a DB-API result copies them)."""
    table: pa.Table = cursor.sql(sql, params=params).to_arrow_table()
    return table


def _with_day(table: pa.Table, day: int) -> pa.Table:
    return table.append_column("day", pa.array([day] * table.num_rows, pa.int32()))


def _measures(store: LakeStore, tenant: str, previous: Manifest | None, kept: set[int],
              fresh: list[pa.Table]) -> pa.Table:
    """The generation's summed rows: the kept days' from the previous one, the rest new."""
    parts = list(fresh)
    if previous is not None and kept:
        rows = store.read_table(f"{lake.generation_dir(tenant, previous.generation)}/"
                                f"{MEASURES}")
        days = np.floor_divide(rows.column("hour").to_numpy(), DAY_US)
        parts.append(rows.filter(pa.array(np.isin(days, sorted(kept)))))
    return pa.concat_tables(parts, promote_options="default")


def _delete_unnamed(now: Current, manifest: Manifest, tenant: str,
                    delete_later: Callable[[list[str]], None]) -> None:
    """Delete (later) what `manifest` no longer names: older generations, and the keys of
    days since changed. Newer generations without a manifest are a killed run's; the
    next one overwrites them."""
    named = {f"{lake.generation_dir(tenant, manifest.generation)}/{name}"
             for name in (MEASURES, JOURNEYS, CONFLICTS, lake.MANIFEST)}
    named |= {lake.summary_day_file(tenant, d.day, d.digest) for d in manifest.days}
    delete_later([rel for rel in now.files if rel not in named])
