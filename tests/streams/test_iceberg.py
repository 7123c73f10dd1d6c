"""The lake's files in Iceberg, exactly once: several committers racing, and a
committer that died after its commit and before any local record of it; read back by a
second engine (pyiceberg's scan into DuckDB) and deduplicated with the contract's
portable SQL. Commits read no file back (the sink recorded what they need, also in its
intent marker), come by deadline, and `pulse compact` merges their manifests; tables an
older Pulse made get its properties. A catalog that is down delays the commits only,
never the lake or the rollups (real processes). A worker killed with -9, a cut path to
the store and `pulse compact`'s swap, with Iceberg on, are in
tests/streams/test_s3_lake.py (one combined case)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import threading
import time
from pathlib import Path

import pytest

from pulse.api.sql import Lake
from pulse.lakefs import LakeStore, lake_dirs, live
from pulse.rollups.metrics import PORTABLE_FIRST_COPIES_SQL
from pulse.schemas import lake
from pulse.settings import Settings
from pulse.streams import iceberg, iceberg_files
from pulse.streams.lake_sink import Flush, LakeWriter
from tests import oracle
from tests.api_process import start_api
from tests.deployment import Pulse
from tests.streams.test_compact import _add, synthetic_lake
from tests.streams.test_lake_failures import assert_exact, two_batches, wait_status


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
    files = live_table_files(store)
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


def written_lake(root: Path, committer: iceberg.Committer | None, flushes: int = 4,
                 per_flush: int = 40) -> LakeWriter:
    """Flushes of three tenants over two days and a few dead letters, written by a sink's
    writer with `committer` (its intent marker written first, as the sink does)."""
    rnd = random.Random(7)
    now_us = time.time_ns() // 1000
    writer = LakeWriter(LakeStore(str(root)), "0a", "events", committer)
    offset = 0
    for _ in range(flushes):
        flush = Flush(0, offset)
        for _ in range(per_flush):
            raw = b"{not json" if rnd.random() < 0.05 else json.dumps({
                "id": f"e{offset}", "tenant_id": f"t{rnd.randrange(3)}",
                "event_type": rnd.choice(["call_ended", "chat_ended"]), "value": offset,
                "customer_id": f"c{rnd.randrange(9)}", "campaign_id": rnd.choice(["a", "b"]),
                "occurred_at": (now_us - rnd.randrange(2) * 86_400_000_000) // 1000 - offset,
            }).encode()
            _add(flush, raw, offset, now_us)
            offset += 1
        writer.write_intent(flush)
        writer.write(flush)
        writer.written(flush)
    return writer


def entry_fields(entry: object) -> dict[str, object]:
    return {name: getattr(entry, name) for name in (
        "file_path", "partition", "record_count", "file_size_in_bytes", "column_sizes",
        "value_counts", "null_value_counts", "lower_bounds", "upper_bounds", "split_offsets")}


def test_commits_read_no_file_back_and_the_intent_keeps_what_they_need(tmp_path: Path):
    root = tmp_path / "lake"
    store = LakeStore(str(root))
    settings = Settings(lake=str(root))
    committer = iceberg.committer(settings, store)
    assert committer is not None
    writer = written_lake(root, committer)
    source = iceberg_files.source_key("0a", 0)
    files = committer.pending(source)
    assert len(files) > 6 and all(f.stats is not None for f in files)
    tables = committer.tables.get()

    # What the sink recorded is what a footer read gives, for every file.
    for f in files:
        table = tables[f.kind]
        from_footer = iceberg.Entries(table, store)(dataclasses.replace(f, stats=None))
        assert entry_fields(iceberg.Entries(table, store)(f)) == entry_fields(from_footer)
        bounded = {table.schema().find_field(c).field_id for c in iceberg_files.BOUNDED[f.kind]}
        offset = table.schema().find_field("kafka_offset").field_id
        assert offset in set(from_footer.lower_bounds) <= bounded  # all-null columns: none

    # The intent marker carries them too (the last flush's are not known before it is
    # written); a marker written before statistics were recorded still reads.
    intent = json.loads(store.get("_pulse/ingest/0a/p0000.json"))
    recovered = {t.rel: t for t in map(iceberg_files.TableFile.from_json, intent["iceberg"])}
    last = max(f.last for f in files)
    assert all(recovered[f.rel] == f for f in files if f.last < last)
    old = [iceberg_files.TableFile.from_json(t[:6]) for t in intent["iceberg"]]
    assert all(t.stats is None for t in old)

    # With every data file moved away, the commit still succeeds: it reads none.
    away = tmp_path / "away"
    os.rename(root / "events", away)
    committer.commit_now()
    os.rename(away, root / "events")
    assert committer.committed == len(files) and committer.waiting(source) == 0
    assert sorted(table_paths(iceberg.Tables(committer.tables.url, store, settings))) == \
        sorted(live_paths(root))
    assert table_counts(committer.tables) == lake_counts(str(root))
    assert writer.iceberg_report(0) == (0, None)


def test_files_of_a_partition_handed_over_are_committed_from_their_footers(tmp_path: Path):
    root = tmp_path / "lake"
    store = LakeStore(str(root))
    committer = iceberg.committer(Settings(lake=str(root)), store)
    assert committer is not None
    writer = written_lake(root, committer, flushes=2)
    # The partition goes to another owner, which rewrites the flushes (as it would one
    # whose offsets this worker failed to commit): same names, other ingestion times.
    writer.handed_over(0)
    written_lake(root, None, flushes=2)
    committer.commit_now()
    for table in committer.tables.get().values():
        for task in table.scan().plan_files():
            rel = task.file.file_path.removeprefix(f"file://{store.arrow_path('')}")
            now = iceberg_files.FileStats.read(store, rel, iceberg_files.table_plan(table))
            assert (task.file.lower_bounds, task.file.file_size_in_bytes) == (
                now.entry()["lower_bounds"], now.size), rel


def test_tables_an_older_pulse_made_get_the_blind_retry_turned_off(tmp_path: Path):
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io.pyarrow import pyarrow_to_schema

    root = tmp_path / "lake"
    root.mkdir()
    store = LakeStore(str(root))
    settings = Settings(lake=str(root))
    url = iceberg.catalog_url(settings, store)
    assert url is not None
    catalog = SqlCatalog(iceberg.NAMESPACE, uri=url, warehouse=store.uri("iceberg"))
    catalog.create_namespace(iceberg.NAMESPACE)
    for kind in (lake.EVENTS, lake.DEAD_LETTERS):  # as the first Pulse with Iceberg did
        catalog.create_table(f"{iceberg.NAMESPACE}.{kind}",
                             schema=pyarrow_to_schema(iceberg.arrow_schema(kind)),
                             location=store.uri(f"iceberg/{kind}"),
                             properties={"commit.manifest-merge.enabled": "true"})
    for kind, table in iceberg.Tables(url, store, settings).get().items():
        assert table.properties["commit.retry.num-retries"] == "0"
        assert iceberg.table_properties(kind).items() <= table.properties.items()
    again = catalog.load_table(f"{iceberg.NAMESPACE}.{lake.EVENTS}")
    assert again.properties["commit.retry.num-retries"] == "0"


def test_commits_come_by_deadline_and_compact_merges_their_manifests(tmp_path: Path):
    root = tmp_path / "lake"
    store = LakeStore(str(root))
    settings = Settings(lake=str(root))
    writing = iceberg.committer(settings.replace(iceberg_commit_seconds=30.0), store)
    assert writing is not None
    written_lake(root, writing, flushes=20, per_flush=10)
    now = time.monotonic()
    # Due when the oldest file would otherwise miss its 30 s, less what commits take.
    assert not writing.due(now) and writing.due(now + 30 - iceberg.COMMIT_MARGIN_SECONDS)
    batches = writing.pending(iceberg_files.source_key("0a", 0))
    committer = iceberg.Committer(writing.tables, 30.0)
    tables = committer.tables.get()
    for n in range(20):  # one fast append per commit: one manifest each
        committer.add(f for f in batches if f.last < (n + 1) * 10)
        committer.commit_now()
    assert not committer.due(now + 3600)
    events = tables[lake.EVENTS].refresh()
    before = len(events.current_snapshot().manifests(events.io))
    assert before == 20
    held, marks = sorted(table_paths(committer.tables)), iceberg.marks(events)
    assert iceberg.merge_manifests(tables) >= before - 2
    events.refresh()
    assert len(events.current_snapshot().manifests(events.io)) <= 2
    assert sorted(table_paths(committer.tables)) == held == sorted(live_paths(root))
    assert iceberg.marks(events) == marks
    assert table_counts(committer.tables) == lake_counts(str(root))


def test_while_commits_fail_the_queue_stops_growing_and_compact_registers_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(iceberg, "OUTAGE_MIN_SECONDS", 0.0)  # left out after 10 intervals
    root = tmp_path / "lake"
    synthetic_lake(root, "0a", tenants=2, days=1, flushes=2, per_flush=20, partitions=1)
    store = LakeStore(str(root))
    settings = Settings(lake=str(root))
    catalog = tmp_path / "catalog"  # missing: the catalog cannot be opened
    url = f"sqlite:///{catalog}/catalog.db"
    committer = iceberg.Committer(iceberg.Tables(url, store, settings), 0.01)
    files = live_table_files(store)
    first = min(f.last for f in files)
    committer.add(f for f in files if f.last == first)
    asyncio.run(committer.run(stopping=lambda: True))  # one attempt: it fails
    assert committer.failures == 1 and "OperationalError" in (committer.problem() or "")
    time.sleep(0.2)
    committer.add(f for f in files if f.last != first)  # the queue no longer grows
    source = iceberg_files.source_key("0a", 0)
    assert {f.last for f in committer.pending(source)} == {first}
    assert "files left for pulse compact" in (committer.problem() or "")

    catalog.mkdir()  # back: what was queued goes in; `pulse compact` registers the rest
    asyncio.run(committer.run(stopping=lambda: True))
    assert committer.problem() is None and committer.waiting(source) == 0
    tables = iceberg.Tables(url, store, settings)
    assert len(table_paths(tables)) == sum(f.last == first for f in files)
    for kind, table in tables.get().items():
        iceberg.register(table, store, [f for f in files if f.kind == kind])
    paths = table_paths(tables)
    assert sorted(paths) == sorted(live_paths(root)) and len(set(paths)) == len(paths)


@pytest.mark.broker
def test_a_catalog_that_is_down_delays_iceberg_commits_only(pulse: Pulse):
    catalog = pulse.root / "catalog"  # missing: sqlite cannot open a file in it
    pulse.env.update(PULSE_ICEBERG_CATALOG=f"sqlite:///{catalog}/catalog.db",
                     PULSE_ICEBERG_COMMIT_SECONDS="1")
    first, second, _, every = two_batches(61, 800)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    api = start_api(pulse)
    pulse.produce(first)
    body = wait_status(api, lambda b: bool(b["lake"]["iceberg"]["commits_failing"]),
                       "the failing Iceberg commits were never reported")
    assert any("OperationalError" in e for e in body["lake"]["iceberg"]["errors"])
    assert "Iceberg commit failed" in worker.log()
    pulse.produce(second)
    assert_exact(pulse, len(first) + len(second), every)  # the lake and rollups go on
    body = wait_status(api, lambda b: b["lake"]["iceberg"]["files_waiting"] > 0,
                       "the files waiting for Iceberg were never reported")
    metrics = api.get_text("/metrics")
    assert re.search(r'^pulse_iceberg_commit_failing\{partition="\d+"\} 1\.0$', metrics, re.M)
    assert re.search(r'^pulse_iceberg_files_waiting\{partition="\d+"\} [1-9]', metrics, re.M)

    catalog.mkdir()  # the catalog is back: every lake file in exactly one snapshot
    store = LakeStore(pulse.settings.lake)
    tables = iceberg.Tables(f"sqlite:///{catalog}/catalog.db", store, pulse.settings)
    wait_status(api, lambda b: not b["lake"]["iceberg"]["commits_failing"]
                and b["lake"]["iceberg"]["files_waiting"] == 0,
                "the Iceberg commits did not catch up")
    paths = table_paths(tables)
    assert sorted(paths) == sorted(live_paths(Path(pulse.settings.lake)))
    assert len(set(paths)) == len(paths)
    unique = len(oracle.unique(every))
    assert table_counts(tables) == (len(every), unique, len(first) + len(second) - len(every))
    assert worker.alive()


def live_table_files(store: LakeStore) -> list[iceberg_files.TableFile]:
    """Every live file of the lake, as the sink hands it to the committer."""
    files = []
    for folder, entries in lake_dirs(store).items():
        for rel in live(folder, entries):
            parsed = lake.parse_name(rel.rpartition("/")[2])
            assert parsed is not None
            files.append(iceberg_files.TableFile(
                rel, folder.kind, folder.tenant_id, folder.day,
                iceberg_files.source_key(parsed.epoch, parsed.partition), parsed.last))
    return files
