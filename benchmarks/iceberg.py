"""`pulse bench iceberg`: how long a lake file waits before it is in an Iceberg snapshot.

Two workers (one consumer group, two state folders) share a folder lake and its sqlite
Iceberg catalog, and commit to the same two tables while events arrive at a steady
rate. When everything is in the lake and the tables, each data file's lag is the time
of the snapshot that added it (`inspect.entries`) less the file's modification time
(when the sink wrote it). Goal: p99 <= `PULSE_ICEBERG_COMMIT_SECONDS` + 5 s. The
tables must then hold exactly the lake's live files, each once.

With chdb installed (`pip install chdb`: ClickHouse in process; not a dependency, see
`clickhouse_counts`), ClickHouse reads `pulse.events` too and must count the rows of
`events_raw` and, with the contract's portable SQL, of `events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import tempfile
import time
from pathlib import Path

import duckdb

from pulse.lakefs import LakeStore, lake_dirs, live
from pulse.rollups.metrics import PORTABLE_FIRST_COPIES_SQL
from pulse.schemas import lake
from pulse.streams import iceberg

from .harness import Summary, bench_settings, broker, say, spawn
from .query import percentile
from .workload import events, produce

SLACK_SECONDS = 5.0


async def steady(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """`rate` messages a second for `seconds`, in one-second slices; returns how many."""
    messages = events(int(rate * seconds), seed=5)
    sent = 0
    started = time.monotonic()
    for second in itertools.count():
        chunk = list(itertools.islice(messages, rate))
        if not chunk:
            return sent
        await produce(bootstrap, topic, iter(chunk), len(chunk))
        sent += len(chunk)
        await asyncio.sleep(max(0.0, started + second + 1 - time.monotonic()))
    return sent


def lags(store: LakeStore, tables: iceberg.Tables) -> tuple[list[float], list[str], set[str]]:
    """(lag of each file in seconds, the tables' files with repeats, the lake's live files)."""
    out, held = [], []
    for table in tables.get().values():
        table.refresh()
        if table.current_snapshot() is None:
            continue  # nothing committed to it yet
        added_ms = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
        entries = table.inspect.entries().to_pylist()
        for entry in entries:
            path = entry["data_file"]["file_path"]
            held.append(path)
            mtime = os.stat(path.removeprefix("file://")).st_mtime
            out.append(added_ms[entry["snapshot_id"]] / 1000 - mtime)
    wanted = {iceberg.table_path(store, rel) for d, e in lake_dirs(store).items()
              for rel in live(d, e)}
    return out, held, wanted


def clickhouse_counts(root: Path, tables: iceberg.Tables) -> tuple[int, int] | str | None:
    """(rows, first copies) of `pulse.events` as ClickHouse reads it, its error, or None
    without chdb. Not in the tests: chdb is 182 MB to download and 557 MB installed
    (chdb 4.4, ClickHouse 26.9), for a CI that must finish in 15 minutes.

    ClickHouse finds a data file under the folder it is given, so of files registered in
    place (`file://` paths outside the table's folder) it reads none from the table's
    own folder; from a folder above the lake, with the table's metadata linked there, it
    does. It is told the metadata file the catalog names, not left to take the newest
    in the folder, which may be a commit that lost a race to another worker's. chdb
    reads local files only under its working folder, hence the `chdir`."""
    try:
        from chdb import session
    except ImportError:
        return None
    table = tables.get()[lake.EVENTS].refresh()
    metadata = table.metadata_location.removeprefix("file://")
    link = root / "metadata"
    link.symlink_to(os.path.dirname(metadata))
    try:
        with contextlib.chdir(root):
            db = session.Session()
            try:
                db.query(f"CREATE TABLE events ENGINE = IcebergLocal('{root}') SETTINGS "
                         f"iceberg_metadata_file_path = 'metadata/{os.path.basename(metadata)}'")
                raw = db.query("SELECT count(*) FROM events", "CSV").data()
                unique = db.query("SELECT count(*) FROM (" + PORTABLE_FIRST_COPIES_SQL.format(
                    table="events") + ")", "CSV").data()
            finally:
                db.close()
        return int(raw), int(unique)
    except Exception as exc:  # chdb raises its own error type; the summary says it
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        link.unlink()


def lake_counts(store: LakeStore) -> tuple[int, int]:
    """(rows of `events_raw`, of `events`) by plain DuckDB over the folder lake."""
    files = f"read_parquet('{store.arrow_path('events')}/**/*.parquet', hive_partitioning = true)"
    raw = duckdb.sql(f"SELECT count(*) FROM {files}").fetchall()[0][0]
    unique = duckdb.sql("SELECT count(*) FROM (" + PORTABLE_FIRST_COPIES_SQL.format(
        table=files) + ")").fetchall()[0][0]
    return raw, unique


def run_iceberg(rate: int, seconds: float, commit_seconds: float, quick: bool) -> int:
    summary = Summary("iceberg", quick)
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root, iceberg_commit_seconds=commit_seconds,
                                  lake_flush_seconds=1.0)
        from pulse.streams.broker import ensure_topics

        asyncio.run(ensure_topics(settings))
        env = {"PULSE_ICEBERG_COMMIT_SECONDS": f"{commit_seconds:g}",
               "PULSE_LAKE_FLUSH_SECONDS": "1"}
        workers = [spawn(["worker"], settings, root / f"worker-{i}.log",
                         PULSE_STATE_DIR=str(root / f"state-{i}"), **env) for i in range(2)]
        try:
            say(f"pulse bench iceberg: two workers, {rate:,} events/s for {seconds:.0f} s, "
                f"commits every {commit_seconds:g} s")
            time.sleep(8)  # both join the group before traffic starts
            sent = asyncio.run(steady(bootstrap, settings.topic, rate, seconds))
            store = LakeStore.open(settings.lake, settings)
            tables = iceberg.Tables(iceberg.catalog_url(settings, store) or "", store, settings)
            deadline = time.monotonic() + commit_seconds * 3 + 60
            while True:
                time.sleep(2)
                found, held, wanted = lags(store, tables)
                if set(held) == wanted or time.monotonic() > deadline:
                    break
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGTERM)
            for worker in workers:
                worker.wait(120)
        snapshots = sum(len(t.snapshots()) for t in tables.get().values())
        in_lake = lake_counts(store)
        clickhouse = clickhouse_counts(root, tables)
    missing, twice = len(wanted - set(held)), len(held) - len(set(held))
    extra = len(set(held) - wanted)
    exact = not (missing or twice or extra) and clickhouse in (None, in_lake)
    p50, p99 = percentile(found, 0.5), percentile(found, 0.99)
    goal = commit_seconds + SLACK_SECONDS
    summary.numbers.update({
        "messages": sent, "rate": rate, "seconds": seconds, "commit_seconds": commit_seconds,
        "files": len(held), "snapshots": snapshots, "lag_p50_s": round(p50, 2),
        "lag_p99_s": round(p99, 2), "lag_max_s": round(max(found), 2), "exact": exact,
        "missing_at_deadline": missing, "held_twice": twice, "held_not_live": extra,
        "lake_rows_and_first_copies": in_lake, "clickhouse_rows_and_first_copies": clickhouse})
    if clickhouse is None:
        engine = "ClickHouse (chdb) not run: pip install chdb"
    elif isinstance(clickhouse, str):
        engine = f"ClickHouse (chdb) failed: {clickhouse}"
    else:
        engine = (f"ClickHouse (chdb) counts {clickhouse[0]:,} rows, {clickhouse[1]:,} first "
                  f"copies, the lake {in_lake[0]:,} and {in_lake[1]:,}")
    line = (f"two workers, {len(held):,} files in {snapshots} snapshots: commit lag p50 "
            f"{p50:.1f} s, p99 {p99:.1f} s, max {max(found):.1f} s (goal p99 <= {goal:g} s); "
            f"every live file once: {exact} ({missing} not yet in at the deadline, {twice} "
            f"twice, {extra} not live); {engine}")
    return summary.finish(line, exact and p99 <= goal, f"p99 {goal:g} s")
