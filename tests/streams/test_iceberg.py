"""The lake's files in Iceberg, exactly once: several committers racing, and a
committer that died after its commit and before any local record of it; read back by a
second engine (pyiceberg's scan into DuckDB) and deduplicated with the contract's
portable SQL. A worker killed with -9, a cut path to the store and `pulse compact`'s
swap, with Iceberg on, are in tests/streams/test_s3_lake.py (one combined case)."""

from __future__ import annotations

import threading
from pathlib import Path

from pulse.api.sql import Lake
from pulse.lakefs import LakeStore, lake_dirs, live
from pulse.rollups.metrics import PORTABLE_FIRST_COPIES_SQL
from pulse.schemas import lake
from pulse.settings import Settings
from pulse.streams import iceberg
from tests.streams.test_compact import synthetic_lake


def lake_counts(root: str) -> tuple[int, int, int]:
    """(events_raw, events, dead_letters) as pulse sql counts them."""
    session = Lake(root)
    try:
        table = session.run("SELECT (SELECT count(*) FROM events_raw), (SELECT count(*) FROM "
                            "events), (SELECT count(*) FROM dead_letters)")
        assert table is not None
        return tuple(table.to_pylist()[0].values())  # type: ignore[return-value]
    finally:
        session.close()


def table_counts(tables: iceberg.Tables) -> tuple[int, int, int]:
    """The same three counts by a second engine: pyiceberg scans the tables into DuckDB,
    which deduplicates with the contract's portable SQL."""
    found = tables.get()
    for table in found.values():
        table.refresh()
    db = found[lake.EVENTS].scan().to_duckdb("events")
    raw = db.execute("SELECT count(*) FROM events").fetchone()[0]
    unique = db.execute("SELECT count(*) FROM (" + PORTABLE_FIRST_COPIES_SQL.format(
        table="events") + ")").fetchone()[0]
    dead = found[lake.DEAD_LETTERS].scan().to_arrow().num_rows
    return raw, unique, dead


def table_paths(tables: iceberg.Tables) -> list[str]:
    """Every data file of both tables, with repeats (each must appear once)."""
    return [path for table in tables.get().values()
            for path in table.refresh().inspect.files().column("file_path").to_pylist()]


def live_paths(root: Path) -> set[str]:
    store = LakeStore(str(root))
    return {f"file://{store.arrow_path(rel)}" for d, e in lake_dirs(store).items()
            for rel in live(d, e)}


def test_racing_committers_and_a_repeated_commit_add_every_file_once(tmp_path: Path):
    root = tmp_path / "lake"
    synthetic_lake(root, "0a", tenants=2, days=2, flushes=3, per_flush=30)
    store = LakeStore(str(root))
    settings = Settings(lake=str(root))
    url = iceberg.catalog_url(settings, store)
    assert url == f"sqlite:///{root}/catalog.db"
    files: list[iceberg.TableFile] = []
    for folder, entries in lake_dirs(store).items():
        for rel in live(folder, entries):
            parsed = lake.parse_name(rel.rpartition("/")[2])
            assert parsed is not None
            files.append(iceberg.TableFile(rel, folder.kind, folder.tenant_id, folder.day,
                                           iceberg.source_key(parsed.epoch, parsed.partition),
                                           parsed.last))
    # Three "workers" commit overlapping halves at once; then one commits all again, as
    # a worker killed after its commit and before any local record of it would.
    flushes = sorted({(f.source, f.last) for f in files})
    workers = [iceberg.Committer(iceberg.Tables(url, store, settings), 1.0) for _ in range(3)]
    for i, worker in enumerate(workers):  # whole flushes, as the sink hands them over
        mine = set(flushes[: len(flushes) * (i + 2) // 5])
        worker.add(f for f in files if (f.source, f.last) in mine)
    threads = [threading.Thread(target=w.commit_now) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = iceberg.Committer(iceberg.Tables(url, store, settings), 1.0)
    again.add(files)
    again.commit_now()
    tables = iceberg.Tables(url, store, settings)
    paths = table_paths(tables)
    assert sorted(paths) == sorted(live_paths(root)) and len(set(paths)) == len(paths)
    assert table_counts(tables) == lake_counts(str(root))
    assert sum(w.committed for w in [*workers, again]) == len(files)
