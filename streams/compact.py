"""`pulse compact`: merge the lake's small files into few, with readers never noticing.

The worker writes one file per flush per folder, so a busy lake grows thousands of
small files. Per folder, the live files of one epoch and input partition are merged
into one `-c` file named after the whole range they cover (`schemas.lake.LakeFile`),
written whole (`pulse.lakefs`); only then, after a short grace for readers that
listed the folder just before, are the sources deleted. Readers skip any file covered
by another of the same epoch and partition, so at every moment they see each row
exactly once, and a compaction killed anywhere leaves a correct lake: the next run
deletes the files already covered and finishes the job.

A file is merged only once it can no longer change:

- it is older than `--min-age` (compacted files, which nothing rewrites, always are);
- if it belongs to the current epoch, its offsets lie below the ingest group's
  committed offset for its partition (a file past it may be rewritten by a replay).

Without Kafka the committed offsets are unknown: files of the newest epoch seen in the
lake's intent markers (of every epoch, if there are none) must then be an hour old.

A merge takes a run of files whose ranges neither overlap nor leave room for another
live file of theirs, so the merged file never hides a row it does not hold. Temp
files left by killed writers are removed once a minute old (or `--min-age`, if
longer): a younger one may be a live writer's, just before its rename.

With Iceberg on (`streams.iceberg`), only files the tables hold are merged, and each
merge is swapped into the tables (inputs out, merged file in) in one overwrite
snapshot before its inputs are deleted; a run killed in between is repaired by the
next, which swaps before it deletes anything superseded. At the end, the workers'
manifests (one per commit) are merged into few and snapshots older than
`SNAPSHOT_KEEP_SECONDS` are expired.

Planning (`streams.compact_plan`) is pure; this module does the I/O and reports progress.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pulse.epoch import current_epoch
from pulse.kafka import CLIENT_DEFAULTS, broker_reachable
from pulse.lakefs import Entry, LakeDir, LakeStore, LakeStoreError, lake_dirs, live
from pulse.schemas import lake
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from . import iceberg, iceberg_files, summaries
from .compact_plan import Finality, FolderPlan, Merge, Source, plan_folder

log = logging.getLogger("pulse.compact")

UNKNOWN_OFFSETS_MIN_AGE = 3600.0
TEMP_MIN_AGE = 60.0
KAFKA_TIMEOUT = 30.0
ROW_GROUP_ROWS = 256 * 1024
PROGRESS_SECONDS = 1.0
DELETE_GRACE = 2.0
SNAPSHOT_KEEP_SECONDS = 3600.0
"""Snapshots younger than this stay, for readers planning a scan on one of them."""


# ---- Kafka: the current epoch and the committed offsets ------------------------------


async def _ingest_position(settings: Settings) -> tuple[str, dict[int, int]]:
    """(current epoch, next offset the ingest group will read, per input partition)."""
    epoch = await current_epoch(settings.kafka_bootstrap,
                                Topics.of(settings))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.ingest_group, enable_auto_commit=False,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        await consumer.topics()
        committed = {}
        for partition in sorted(consumer.partitions_for_topic(settings.topic) or ()):
            offset = await consumer.committed(TopicPartition(settings.topic, partition))
            if offset is not None:
                committed[partition] = offset
        return epoch, committed
    finally:
        await consumer.stop()


def make_finality(settings: Settings, store: LakeStore, min_age: float) -> Finality:
    """When a file is final, for this run; asks Kafka, and says so when Kafka does not
    answer."""
    now = store.now()
    if not broker_reachable(settings.kafka_bootstrap, timeout=2.0):
        reason = "no answer"
    else:
        try:
            epoch, committed = asyncio.run(
                asyncio.wait_for(_ingest_position(settings), KAFKA_TIMEOUT))
            return Finality(now, min_age, epoch, committed, min_age)
        except (KafkaError, OSError, TimeoutError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    print(f"pulse compact: Kafka at {settings.kafka_bootstrap} (PULSE_KAFKA_BOOTSTRAP) is not "
          f"reachable ({reason}), so the committed offsets are unknown", file=sys.stderr)
    return Finality(now, min_age, newest_epoch(store), None,
                max(min_age, UNKNOWN_OFFSETS_MIN_AGE))


def newest_epoch(store: LakeStore) -> str | None:
    """The epoch whose ingest intent marker was written last (the worker's, if any runs)."""
    newest: tuple[float, str] | None = None
    for folder, entries in store.walk("_pulse/ingest").items():
        epoch = folder.rpartition("/")[2]
        for entry in entries:
            if newest is None or entry.mtime > newest[0]:
                newest = (entry.mtime, epoch)
    return newest[1] if newest else None


# ---- doing it ------------------------------------------------------------------------


def list_folder(store: LakeStore, folder: LakeDir) -> list[tuple[str, int, float]]:
    return [(e.name, e.size, e.mtime) for e in store.list(folder.rel)]


class UnmergeableFiles(Exception):
    """Files of one run cannot be merged (unreadable or of different schemas)."""


def write_merge(store: LakeStore, folder: LakeDir, plan: Merge) -> int:
    """Write the merged file (its sources are then superseded); returns its size."""
    paths = [folder.file(s.name) for s in plan.sources]
    schema = _common_schema(store, paths)
    return store.put_with(folder.file(plan.target.name),
                          lambda fh: _write_merged(store, fh, paths, schema))


class Deleter:
    """Deletes merged sources a little after their merged file appeared.

    Readers skip superseded files, but one that listed a folder just before the rename
    may still be about to open them; the grace spares it a retry.
    """

    def __init__(self, store: LakeStore, grace: float) -> None:
        self.store = store
        self.grace = grace
        self.queue: deque[tuple[float, list[str]]] = deque()

    def later(self, paths: list[str]) -> None:
        self.queue.append((time.monotonic(), paths))

    def run(self, wait: bool = False) -> None:
        """Delete what is due (everything, waiting for it, if `wait`)."""
        while self.queue:
            at, paths = self.queue[0]
            left = at + self.grace - time.monotonic()
            if left > 0:
                if not wait:
                    return
                time.sleep(left)
            self.queue.popleft()
            for path in paths:
                self.store.delete(path)


def _common_schema(store: LakeStore, paths: list[str]) -> pa.Schema:
    schemas = []
    for path in paths:
        try:
            schemas.append(store.read_schema(path))
        except (OSError, pa.ArrowException) as exc:
            raise UnmergeableFiles(f"cannot read {store.uri(path)}: {exc}") from None
    for path, schema in zip(paths[1:], schemas[1:], strict=True):
        if not schema.equals(schemas[0]):
            raise UnmergeableFiles(f"{path} has other columns than {paths[0]}")
    return schemas[0]


def _write_merged(store: LakeStore, fh: object, paths: list[str], schema: pa.Schema) -> None:
    """Rows of `paths` (a run in offset order), sorted by offset, in large row groups."""
    with pq.ParquetWriter(fh, schema, **lake.PARQUET_OPTIONS) as writer:
        pending: list[pa.Table] = []
        rows = 0
        for path in paths:
            table = store.read_table(path).sort_by("kafka_offset")
            pending.append(table)
            rows += table.num_rows
            if rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending, rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)


@dataclass
class Totals:
    folders: int = 0
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    merged: int = 0
    errors: int = 0


class Progress:
    """A progress line on stderr, at most once a second (rewritten in place on a tty)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.shown = time.monotonic()

    def update(self, done: int, merged: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.shown < PROGRESS_SECONDS:
            return
        self.shown = now
        text = f"pulse compact: {done}/{self.total} folders, {merged} files merged"
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        if self.tty and force:
            print(file=sys.stderr)


class TableSwap:
    """The Iceberg tables kept in step with the lake while compacting."""

    def __init__(self, store: LakeStore, tables: dict[str, object]) -> None:
        self.store = store
        self.tables = tables
        self.held = iceberg.held_paths(tables)
        self.swaps: dict[str, list[tuple[list[str], iceberg_files.TableFile]]] = {}

    def register_final(self, found: dict[LakeDir, list[Entry]], finality: Finality) -> int:
        """Put the lake's final live files that the tables lack into them, before any
        merge (which takes only files the tables hold); returns how many could not be
        read (each said, as a merge that fails is)."""
        added = 0
        unreadable: list[tuple[str, str]] = []
        for kind, table in self.tables.items():
            files = []
            for folder, entries in found.items():
                if folder.kind != kind:
                    continue
                for rel in live(folder, entries):
                    parsed = lake.parse_name(rel.rpartition("/")[2])
                    if parsed is None or iceberg.table_path(self.store, rel) in self.held:
                        continue
                    entry = next(e for e in entries if e.name == parsed.name)
                    if finality.final(Source(parsed, entry.size, entry.mtime)):
                        files.append(iceberg_files.TableFile(
                            rel, kind, folder.tenant_id, folder.day,
                            iceberg_files.source_key(parsed.epoch, parsed.partition), parsed.last))
            if files:
                added += iceberg.register(table, self.store, files, unreadable)
        self.held = iceberg.held_paths(self.tables)
        if added:
            print(f"pulse compact: registered {added} lake files the Iceberg tables lacked",
                  file=sys.stderr)
        for rel, why in unreadable:
            log.error("%s: not merged, left as it is: %s. Move an unreadable file out of the "
                      "lake (readers fail on it too), then run pulse compact again",
                      rel.rpartition("/")[0], why)
        return len(unreadable)

    def holds(self, folder: LakeDir, source: Source) -> bool:
        return iceberg.table_path(self.store, folder.file(source.name)) in self.held

    def queue(self, folder: LakeDir, inputs: list[Source], merged: lake.LakeFile) -> None:
        """Swap `merged` in for `inputs` with the others, at the end of the run."""
        target = iceberg_files.TableFile(folder.file(merged.name), folder.kind, folder.tenant_id,
                                   folder.day, iceberg_files.source_key(merged.epoch,
                                                                  merged.partition), merged.last)
        self.swaps.setdefault(folder.kind, []).append(
            ([folder.file(s.name) for s in inputs], target))

    def commit(self) -> list[str]:
        """One overwrite snapshot per table for every queued swap; returns the inputs
        that may now be deleted."""
        out = []
        for kind, swaps in self.swaps.items():
            done = iceberg.swap(self.tables[kind], self.store, swaps)
            out += [rel for inputs, _ in done for rel in inputs]
            if len(done) < len(swaps):
                log.warning("%d merged files are not in the Iceberg tables (an input is "
                            "missing there); their inputs stay", len(swaps) - len(done))
        self.swaps.clear()
        return out


def _superseded_out_of_tables(plan: FolderPlan, tables: TableSwap | None) -> list[Source]:
    """The superseded files that may be deleted now: all, or with Iceberg those the
    tables no longer hold (the others have their covering file's swap queued: a run
    killed before it swapped left them)."""
    if tables is None:
        return plan.superseded
    held = [s for s in plan.superseded if tables.holds(plan.folder, s)]
    for cover in plan.live:
        inputs = [s for s in held if cover.file.covers(s.file)]
        if inputs:
            tables.queue(plan.folder, inputs, cover.file)
    return [s for s in plan.superseded if not tables.holds(plan.folder, s)]


def compact_folder(store: LakeStore, plan: FolderPlan, totals: Totals,
                   deleter: Deleter, tables: TableSwap | None = None) -> None:
    """Carry out `plan`, counting into `totals`; a run that fails is left as it is."""
    totals.files_before += plan.files
    totals.bytes_before += plan.size
    files, size = plan.files, plan.size
    for source in _superseded_out_of_tables(plan, tables):
        store.delete(plan.folder.file(source.name))
        files, size = files - 1, size - source.size
    for name in plan.temps:
        store.delete(plan.folder.file(name))
    for run in plan.merges:
        if tables is not None and not all(tables.holds(plan.folder, s) for s in run.sources):
            continue  # not all committed to Iceberg yet: a later run merges them
        try:
            written = write_merge(store, plan.folder, run)
        except (UnmergeableFiles, OSError, pa.ArrowException) as exc:
            totals.errors += 1
            log.error("%s: not merged, left as it is: %s. Move an unreadable file out of the "
                      "lake (readers fail on it too), then run pulse compact again",
                      plan.folder.rel, exc)
            continue
        if tables is not None:
            tables.queue(plan.folder, list(run.sources), run.target)  # deleted once swapped
        else:
            deleter.later([plan.folder.file(s.name) for s in run.sources])
        files, size = files - len(run.sources) + 1, size - run.size + written
        totals.merged += len(run.sources)
    totals.files_after += files
    totals.bytes_after += size


def describe_plan(plan: FolderPlan) -> Iterator[str]:
    for run in plan.merges:
        yield (f"{plan.folder.rel}: {len(run.sources)} files ({_size(run.size)}) -> "
               f"{run.target.name}")
    if plan.superseded:
        yield f"{plan.folder.rel}: delete {len(plan.superseded)} superseded files"
    if plan.temps:
        yield f"{plan.folder.rel}: delete {len(plan.temps)} stale temp files"


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n, step = n / 1024, step + 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def run_compact(settings: Settings, *, min_age: float, dry_run: bool) -> int:
    """`pulse compact`; returns the exit code (1 if some files could not be merged)."""
    try:
        store = LakeStore.open(settings.lake, settings)
        store.check()
    except LakeStoreError as exc:
        print(f"pulse compact: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(settings, store, min_age, dry_run)
    except KeyboardInterrupt:
        print("\npulse compact: interrupted; the lake is consistent, run pulse compact again "
              "to finish", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"pulse compact: {exc}. The lake is consistent; check that this user may write "
              f"to {store.uri('')}, then run pulse compact again", file=sys.stderr)
        return 1


def _run(settings: Settings, store: LakeStore, min_age: float, dry_run: bool) -> int:
    listed = lake_dirs(store)
    found = list(listed)
    if not found:
        print(f"pulse compact: no lake files under {store.uri('')}; nothing to do")
        return 0
    finality = make_finality(settings, store, min_age)
    print(f"pulse compact: {finality.describe()}", file=sys.stderr)
    temp_min_age = max(min_age, TEMP_MIN_AGE)
    if dry_run:
        return _dry_run(store, found, finality, temp_min_age)
    with store.exclusive("compact") as mine:
        if not mine:
            print("pulse compact: another pulse compact is running on this lake; run this one "
                  "when it has finished", file=sys.stderr)
            return 1
        tables = _open_tables(settings, store)
        if tables is False:
            return 1
        unreadable = tables.register_final(listed, finality) if isinstance(tables, TableSwap) else 0
        return _compact(settings, store, found, finality, temp_min_age,
                        tables if isinstance(tables, TableSwap) else None, unreadable)


def _open_tables(settings: Settings, store: LakeStore) -> TableSwap | None | bool:
    """The tables to keep in step (None: Iceberg off; False: its catalog failed)."""
    url = iceberg.catalog_url(settings, store)
    if url is None:
        return None
    try:
        return TableSwap(store, iceberg.Tables(url, store, settings).get())
    except Exception as exc:
        print(f"pulse compact: cannot open the Iceberg catalog ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}); fix PULSE_ICEBERG_CATALOG "
              "(none turns Iceberg off), then run pulse compact again", file=sys.stderr)
        return False


def _dry_run(store: LakeStore, found: list[LakeDir], finality: Finality,
             temp_min_age: float) -> int:
    files = after = size = merged = 0
    for folder in found:
        plan = plan_folder(folder, list_folder(store, folder), finality, temp_min_age)
        for line in describe_plan(plan):
            print(line)
        files += plan.files
        size += plan.size
        merged += sum(len(m.sources) for m in plan.merges)
        after += plan.files - len(plan.superseded) - sum(len(m.sources) - 1
                                                         for m in plan.merges)
    print(f"pulse compact (dry run): {len(found)} folders, {files} -> {after} files "
          f"({merged} merged), {_size(size)} now; nothing changed")
    return 0


def _compact(settings: Settings, store: LakeStore, found: list[LakeDir], finality: Finality,
             temp_min_age: float, tables: TableSwap | None, unreadable: int = 0) -> int:
    started = time.monotonic()
    totals = Totals(folders=len(found), errors=unreadable)
    progress = Progress(len(found))
    deleter = Deleter(store, DELETE_GRACE)
    for done, folder in enumerate(found, 1):
        plan = plan_folder(folder, list_folder(store, folder), finality, temp_min_age)
        compact_folder(store, plan, totals, deleter, tables)
        deleter.run()
        progress.update(done, totals.merged, force=done == len(found))
    summed = summaries.summarize(store, settings,
                                 lambda f, e: finality.final(Source(f, e.size, e.mtime)),
                                 deleter.later)
    if tables is not None:
        deleter.later(tables.commit())
    deleter.run(wait=True)
    if tables is not None:
        merged = iceberg.merge_manifests(tables.tables)
        expired = iceberg.expire(tables.tables, SNAPSHOT_KEEP_SECONDS)
        print(f"pulse compact: Iceberg tables in step; {merged} manifests merged away, "
              f"{expired} snapshots older than {SNAPSHOT_KEEP_SECONDS:.0f} s expired",
              file=sys.stderr)
    print(f"pulse compact: {totals.folders} folders, {totals.files_before} -> "
          f"{totals.files_after} files, {_size(totals.bytes_before)} -> "
          f"{_size(totals.bytes_after)}, {time.monotonic() - started:.1f} s")
    print(f"pulse compact: summaries of {summed.tenants} tenants: {summed.days_read} days "
          f"summarized, {summed.days_kept} kept, {summed.generations} new generations",
          file=sys.stderr)
    if totals.errors:
        print(f"pulse compact: {totals.errors} runs were not merged (see above)",
              file=sys.stderr)
    if summed.errors:
        print(f"pulse compact: the summaries of {summed.errors} tenants were not updated "
              "(see above)", file=sys.stderr)
    return 1 if totals.errors or summed.errors else 0
