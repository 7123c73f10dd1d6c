"""The lake's files, committed in place to the Iceberg tables `pulse.events` and
`pulse.dead_letters` (contract section 5), exactly once.

The lake stays the source of truth: every file the sink writes is registered as it is
(never copied), with its partition (`tenant_id`, `day(occurred_at)`; dead letters
`day(received_at)`) taken from its folder, which holds one tenant and one day.
`tenant_id` is not a column of the files: Iceberg readers fill an identity partition's
column from the partition values, as the hive folder does for plain readers.

Exactly once, as the Iceberg Kafka Connect sink does it: each snapshot's summary
carries, per source (`pulse.offsets.<epoch>.<input partition>`), the last input offset
whose files the table holds, merged over every writer (each commit copies the map of
the snapshot it builds on and raises its own sources). A file is in the table iff its
range ends at or below its source's mark; sources are committed in flush order, so a
mark covers a prefix. Before each commit the table is refreshed and the files already
covered dropped; on `CommitFailedException` (another worker committed first) it
refreshes, re-checks and tries again. pyiceberg's own retry is off
(`commit.retry.num-retries` 0, set on tables an older Pulse made too): it would
re-apply the append without re-checking.

Nothing is read from storage at commit time: the sink records each file's size and
statistics from the footer it has just written (`FileStats`), and its intent marker
keeps them (`streams.lake_sink`), so that a worker killed before its commit leaves the
next owner the list to commit, statistics included, and one killed after it leaves a
list the marks then rule out. Files without recorded statistics (older markers, the
flush a worker died in, `pulse compact`'s merged files) have their footer read.

Each file is committed by its deadline: a commit starts once the oldest waiting file
would otherwise miss `PULSE_ICEBERG_COMMIT_SECONDS`, allowing for what recent commits
took, and takes every file waiting then (few snapshots, little contention). Workers
append with `fast_append` (one new manifest, no rewrite of the old ones), so a commit
costs the same after months; `pulse compact` merges the manifests (`merge_manifests`).
A catalog that does not answer delays commits only: the committer runs beside the
sink, which never waits for it, and reports its error and what waits with the lake
marks (`/analytics/status`, `/metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pyarrow as pa

from pulse.lakefs import LakeStore
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pulse.settings import Settings

from .iceberg_files import (
    OFFSETS,
    FileStats,
    Plan,
    TableFile,
    arrow_schema,
    table_plan,
    table_properties,
)

log = logging.getLogger("pulse.iceberg")

NAMESPACE = "pulse"
COMMIT_ATTEMPTS = 20
COMMIT_MARGIN_SECONDS = 1.0
"""Slack on top of the longest recent commit when working out when to start one."""
OUTAGE_INTERVALS, OUTAGE_MIN_SECONDS = 10, 300.0
"""While commits fail, a partition queues files for at most this many commit intervals
(and at least this long); later ones are left out of the queue and its intent marker,
which would otherwise grow with every flush, for `pulse compact` to register."""
MANIFESTS_KEPT = 16
"""`merge_manifests` leaves a table with at most this many manifests alone."""
ERROR_CHARS = 300
"""Of a commit error, what rides in every lake mark (SQLAlchemy's run to many lines)."""
def catalog_url(settings: Settings, store: LakeStore) -> str | None:
    """`PULSE_ICEBERG_CATALOG`, its default (sqlite in a folder lake, none on S3), or None
    when Iceberg is off."""
    url = settings.iceberg_catalog
    if url is None:
        if not store.local:
            return None
        url = f"sqlite:///{os.path.abspath(os.path.join(store.root, 'catalog.db'))}"
    return None if url.lower() == "none" else url


def committer(settings: Settings, store: LakeStore) -> Committer | None:
    """The committer of this worker's lake, None when Iceberg is off."""
    url = catalog_url(settings, store)
    if url is None:
        return None
    return Committer(Tables(url, store, settings), settings.iceberg_commit_seconds)


class Tables:
    """The catalog and its two tables, opened on demand (and again after a failure)."""

    def __init__(self, url: str, store: LakeStore, settings: Settings) -> None:
        self.url = url
        self.store = store
        self.settings = settings
        self._tables: dict[str, Any] | None = None

    def _properties(self) -> dict[str, str]:
        props = {"uri": self.url, "warehouse": self.store.uri("iceberg")}
        if not self.store.local:
            s = self.settings
            props.update({"s3.region": s.aws_region, "py-io-impl":
                          "pyiceberg.io.pyarrow.PyArrowFileIO"})
            if s.s3_endpoint:
                props["s3.endpoint"] = s.s3_endpoint
            if s.aws_access_key_id:
                props["s3.access-key-id"] = s.aws_access_key_id
            if s.aws_secret_access_key:
                props["s3.secret-access-key"] = s.aws_secret_access_key
            if s.aws_session_token:
                props["s3.session-token"] = s.aws_session_token
        return props

    def get(self) -> dict[str, Any]:
        """{kind: table}, creating the namespace and tables if they do not exist."""
        if self._tables is None:
            from pyiceberg.catalog.sql import SqlCatalog

            for attempt in range(6):  # several workers may create them at once
                try:
                    catalog = SqlCatalog(NAMESPACE, **self._properties())
                    catalog.create_namespace_if_not_exists(NAMESPACE)
                    self._tables = {kind: self._table(catalog, kind)
                                    for kind in (lake.EVENTS, lake.DEAD_LETTERS)}
                    break
                except Exception:
                    if attempt == 5:
                        raise
                    time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
        assert self._tables is not None
        return self._tables

    def forget(self) -> None:
        """After a failure: open the catalog afresh next time."""
        self._tables = None

    def _table(self, catalog: Any, kind: str) -> Any:
        from pyiceberg.io.pyarrow import pyarrow_to_schema
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.transforms import DayTransform, IdentityTransform

        if kind == lake.EVENTS:
            spec = PartitionSpec(
                PartitionField(len(EVENT_SCHEMA) + 1, 1000, IdentityTransform(), "tenant_id"),
                PartitionField(EVENT_SCHEMA.get_field_index("occurred_at") + 1, 1001,
                               DayTransform(), "occurred_at_day"))
        else:
            spec = PartitionSpec(PartitionField(
                DEAD_LETTER_SCHEMA.get_field_index("received_at") + 1, 1000, DayTransform(),
                "received_at_day"))
        wanted = table_properties(kind)
        table = catalog.create_table_if_not_exists(
            f"{NAMESPACE}.{kind}", schema=pyarrow_to_schema(arrow_schema(kind)),
            partition_spec=spec, location=self.store.uri(f"iceberg/{kind}"),
            properties=wanted)
        # Properties apply at creation only: a table an older Pulse made lacks the newer
        # ones, above all the retry that would re-apply an append without Pulse's check.
        # Set before any commit of this process (a conflict retries `get`).
        stale = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
        if stale:
            with table.transaction() as tx:
                tx.set_properties(stale)
            log.info("Iceberg table %s.%s: set %s", NAMESPACE, kind, ", ".join(
                f"{k}={v}" for k, v in sorted(stale.items())))
        return table


def table_path(store: LakeStore, rel: str) -> str:
    """How the tables name the lake file `rel` (a URI every engine resolves)."""
    return f"file://{store.arrow_path(rel)}" if store.local else store.uri(rel)


def marks(table: Any) -> dict[str, int]:
    """The table's committed offsets (source -> last offset), from its current snapshot."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    return {k: int(v) for k, v in snapshot.summary.additional_properties.items()
            if k.startswith(OFFSETS)}


class Entries:
    """Table entries of lake files, each made once however many attempts a commit takes;
    a footer is read only for a file without recorded statistics, with the table's
    statistics plan worked out once for all of them."""

    def __init__(self, table: Any, store: LakeStore) -> None:
        self.table = table
        self.store = store
        self._plan: Plan | None = None
        self._made: dict[str, Any] = {}

    def __call__(self, ref: TableFile) -> Any:
        entry = self._made.get(ref.rel)
        if entry is None:
            entry = self._made[ref.rel] = self._make(ref)
        return entry

    def _make(self, ref: TableFile) -> Any:
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
        from pyiceberg.typedef import Record

        stats = ref.stats
        if stats is None:
            if self._plan is None:
                self._plan = table_plan(self.table)
            stats = FileStats.read(self.store, ref.rel, self._plan)
        partition = Record(ref.tenant_id, ref.day) if ref.kind == lake.EVENTS else Record(ref.day)
        return DataFile.from_args(
            content=DataFileContent.DATA, file_path=table_path(self.store, ref.rel),
            file_format=FileFormat.PARQUET, partition=partition, sort_order_id=None,
            spec_id=self.table.metadata.default_spec_id, equality_ids=None,
            key_metadata=None, **stats.entry())


def _conflicts() -> tuple[type[Exception], ...]:
    """What a commit that lost a race raises: another writer committed first, or held
    the sqlite catalog's lock. Refresh, re-check and try again."""
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import OperationalError

    return CommitFailedException, OperationalError


def _pause(attempt: int) -> None:
    time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))


def _summary(raised: dict[str, int]) -> dict[str, str]:
    return {k: str(v) for k, v in raised.items()}


def commit(table: Any, store: LakeStore, files: list[TableFile]) -> int:
    """Add the files the table does not hold yet, in one snapshot; returns how many.

    Refresh, drop what the marks cover, commit with the merged marks; if another
    writer committed in between, all of that again.
    """
    entries = Entries(table, store)
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        done = marks(table)
        todo = [f for f in files if done.get(f.source, -1) < f.last]
        if not todo:
            return 0
        raised = dict(done)
        for f in todo:
            raised[f.source] = max(raised.get(f.source, -1), f.last)
        made = [entries(f) for f in todo]
        try:
            with table.transaction() as tx, tx.update_snapshot(
                    snapshot_properties=_summary(raised)).fast_append() as append:
                for entry in made:
                    append.append_data_file(entry)
            return len(todo)
        except _conflicts():
            _pause(attempt)
    raise RuntimeError(f"{len(files)} files not committed after {COMMIT_ATTEMPTS} conflicts")


def register(table: Any, store: LakeStore, files: list[TableFile],
             unreadable: list[tuple[str, str]] | None = None) -> int:
    """Add the files the table does not hold, by path (not by marks), raising their
    sources' marks: `pulse compact` registers so the lake's final files that no worker
    committed (written before Iceberg was on, by a worker killed before its commit whose
    flushes no owner read back, or left out of the queue while the catalog was down).
    One snapshot, so that no worker sees a raised mark before every file under it is in.
    Returns how many; files that cannot be read are left out and listed in `unreadable`
    (path, why)."""
    entries = Entries(table, store)
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        held = set(table.inspect.files().column("file_path").to_pylist())
        todo = [f for f in files if table_path(store, f.rel) not in held]
        if not todo:
            return 0
        made = []
        for f in todo:
            try:
                made.append((f, entries(f)))
            except (OSError, pa.ArrowException) as exc:  # the caller says so
                if unreadable is not None and attempt == 0:
                    unreadable.append((f.rel, f"cannot read {store.uri(f.rel)}: {exc}"))
        if not made:
            return 0
        raised = marks(table)
        for f, _ in made:
            raised[f.source] = max(raised.get(f.source, -1), f.last)
        try:
            with table.transaction() as tx, tx.update_snapshot(
                    snapshot_properties=_summary(raised)).fast_append() as append:
                for _, entry in made:
                    append.append_data_file(entry)
            return len(made)
        except _conflicts():
            _pause(attempt)
    raise RuntimeError(f"{len(files)} files not registered after {COMMIT_ATTEMPTS} conflicts")


def swap(table: Any, store: LakeStore,
         swaps: list[tuple[list[str], TableFile]]) -> list[tuple[list[str], TableFile]]:
    """`pulse compact`'s merged files in place of their inputs, all in one overwrite
    snapshot (the marks carried on). Returns the swaps the table now has: those done
    here, and those done before (by a run killed before it deleted the inputs); a swap
    one of whose inputs the table lacks is left out, changing nothing."""
    entries = Entries(table, store)
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        held = {t.file.file_path: t.file for t in table.scan().plan_files()}
        done, todo = [], []
        for inputs, merged in swaps:
            wanted = {table_path(store, rel) for rel in inputs}
            target = table_path(store, merged.rel)
            if target in held and not wanted & held.keys():
                done.append((inputs, merged))
            elif wanted <= held.keys() and target not in held:
                todo.append((inputs, merged))
        if not todo:
            return done
        made = [entries(merged) for _, merged in todo]
        try:
            with table.transaction() as tx, tx.update_snapshot(
                    snapshot_properties=_summary(marks(table))).overwrite() as overwrite:
                for (inputs, _), entry in zip(todo, made, strict=True):
                    for rel in inputs:
                        overwrite.delete_data_file(held[table_path(store, rel)])
                    overwrite.append_data_file(entry)
            return done + todo
        except _conflicts():
            _pause(attempt)
    raise RuntimeError(f"{len(swaps)} merged files not swapped in after {COMMIT_ATTEMPTS} "
                       "conflicts")


def merge_manifests(tables: dict[str, Any]) -> int:
    """Rewrite each table's manifests into few, in a snapshot that adds nothing (the
    marks carried on); returns how many manifests were merged away.

    Workers append with `fast_append`, one manifest per commit, so that a commit costs
    the same after months; readers plan a scan from every manifest, so `pulse compact`
    packs them (pyiceberg's merge, up to `commit.manifest.target-size-bytes` each)."""
    merged = 0
    for table in tables.values():
        for attempt in range(COMMIT_ATTEMPTS):
            table.refresh()
            snapshot = table.current_snapshot()
            before = 0 if snapshot is None else len(snapshot.manifests(table.io))
            if before <= MANIFESTS_KEPT:
                break
            try:
                with table.transaction() as tx, tx.update_snapshot(
                        snapshot_properties=_summary(marks(table))).merge_append():
                    pass
            except _conflicts():
                _pause(attempt)
                continue
            merged += before - len(table.refresh().current_snapshot().manifests(table.io))
            break
    return merged


def held_paths(tables: dict[str, Any]) -> set[str]:
    """Every data file the tables hold now."""
    out: set[str] = set()
    for table in tables.values():
        table.refresh()
        out.update(table.inspect.files().column("file_path").to_pylist())
    return out


def expire(tables: dict[str, Any], keep_seconds: float) -> int:
    """Expire snapshots older than `keep_seconds` (never the current one), so that the
    metadata stays small after months of commits; returns how many."""
    from datetime import UTC, datetime, timedelta

    expired = 0
    for table in tables.values():
        table.refresh()
        current = table.current_snapshot()
        cutoff = datetime.now(UTC) - timedelta(seconds=keep_seconds)
        old = [s.snapshot_id for s in table.snapshots()
               if current is not None and s.snapshot_id != current.snapshot_id
               and s.timestamp_ms < cutoff.timestamp() * 1000]
        if old:
            table.maintenance.expire_snapshots().by_ids(old).commit()
            expired += len(old)
    return expired


class Committer:
    """Queues the sink's written files and commits each by its deadline.

    The sink adds files from the event loop and reads the queue from its writer thread
    (for the intent marker) while `commit_now` runs in another: one lock guards it.
    """

    def __init__(self, tables: Tables, interval: float) -> None:
        self.tables = tables
        self.interval = interval
        self._lock = threading.Lock()
        self._queued: dict[str, dict[str, tuple[TableFile, float]]] = {}
        """source -> rel -> (file, since when it waits), in the order they came."""
        self._took: deque[float] = deque(maxlen=5)
        """How long the recent commits took (seconds)."""
        self.committed = 0
        self.failures = 0
        self.last_error: str | None = None
        self.left_out = 0
        """Files not queued because commits had failed for too long (`OUTAGE_INTERVALS`)."""

    def add(self, files: Iterable[TableFile], overdue: bool = False) -> None:
        """Files of whole flushes: a flush's files must be committed together, since one
        of them in the table raises its source's mark over all of them. `overdue`: an
        earlier owner's, written long ago, so due at once."""
        now = time.monotonic()
        since = now - self.interval if overdue else now
        limit = max(OUTAGE_INTERVALS * self.interval, OUTAGE_MIN_SECONDS)
        by_source: dict[str, list[TableFile]] = {}
        for f in files:
            by_source.setdefault(f.source, []).append(f)
        with self._lock:
            for source, new in by_source.items():
                queued = self._queued.setdefault(source, {})
                if self.last_error is not None and queued and now - self._oldest(queued) > limit:
                    if not self.left_out:
                        log.error("Iceberg commits have failed for %.0f s: lake files are no "
                                  "longer queued for them (run pulse compact once the catalog "
                                  "is back: it registers them)", limit)
                    self.left_out += len(new)
                    continue
                for f in new:
                    old = queued.get(f.rel)
                    queued[f.rel] = (f, since if old is None else old[1])

    @staticmethod
    def _oldest(queued: dict[str, tuple[TableFile, float]]) -> float:
        return next(iter(queued.values()))[1]

    def handed_over(self, source: str) -> None:
        """`source`'s partition went to another owner, which rewrites (same names, other
        bytes) a flush whose offsets this worker wrote but failed to commit: the files
        of `source` waiting here are committed from their footers as read then, as
        before statistics were recorded, not from what this worker wrote."""
        with self._lock:
            queued = self._queued.get(source, {})
            for rel, (f, since) in list(queued.items()):
                queued[rel] = (replace(f, stats=None), since)

    def pending(self, source: str) -> list[TableFile]:
        """What of `source` is written and not yet known to be in the table."""
        with self._lock:
            return [f for f, _ in self._queued.get(source, {}).values()]

    def waiting(self, source: str) -> int:
        with self._lock:
            return len(self._queued.get(source, ()))

    def problem(self) -> str | None:
        """The last commit error while commits fail (None once one succeeds)."""
        if self.last_error is None:
            return None
        if self.left_out:
            return f"{self.last_error} ({self.left_out} files left for pulse compact)"
        return self.last_error

    def due(self, now: float) -> bool:
        """Whether the oldest waiting file must go now to be in a snapshot within
        `interval` of being handed over, if this commit takes what recent ones took."""
        with self._lock:
            oldest = min((self._oldest(q) for q in self._queued.values() if q), default=None)
        if oldest is None:
            return False
        lead = max(self._took, default=0.0) + COMMIT_MARGIN_SECONDS
        return now >= oldest + self.interval - lead

    def commit_now(self) -> None:
        """Commit everything waiting (blocking; run in a thread)."""
        with self._lock:
            batch = [f for queued in self._queued.values() for f, _ in queued.values()]
        if not batch:
            return
        started = time.monotonic()
        tables = self.tables.get()
        for kind, table in tables.items():
            mine = [f for f in batch if f.kind == kind]
            if mine:
                self.committed += commit(table, self.tables.store, mine)
        with self._lock:
            for f in batch:
                queued = self._queued.get(f.source, {})
                if f.rel in queued and queued[f.rel][0] is f:
                    del queued[f.rel]
            self._queued = {s: q for s, q in self._queued.items() if q}
        self._took.append(time.monotonic() - started)

    async def run(self, stopping: Callable[[], bool],
                  on_change: Callable[[], None] | None = None) -> None:
        """Commit by deadline until `stopping()`, then once more. After a failure, retry
        with backoff up to one interval; `on_change` hears of every attempt (the sink
        reports the error and what waits)."""
        backoff = retry_at = 0.0
        while True:
            done = stopping()
            if not done and (time.monotonic() < retry_at or not self.due(time.monotonic())):
                await asyncio.sleep(0.1)
                continue
            ok = await self._attempt()
            if on_change is not None:
                on_change()
            if done:
                return
            backoff = 0.0 if ok else min(max(1.0, backoff * 2), max(1.0, self.interval))
            retry_at = time.monotonic() + backoff

    async def _attempt(self) -> bool:
        try:
            await asyncio.to_thread(self.commit_now)
        except Exception as exc:  # the catalog or store: never stop the sink for it
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:ERROR_CHARS]
            self.tables.forget()
            with self._lock:
                waiting = sum(len(q) for q in self._queued.values())
            log.error("Iceberg commit failed (%s): %d lake files wait; retrying. Check "
                      "PULSE_ICEBERG_CATALOG", self.last_error, waiting)
            return False
        if self.last_error is not None:
            log.info("Iceberg commits work again")
            if self.left_out:
                log.warning("%d lake files were left out of the Iceberg queue while commits "
                            "failed: run pulse compact, which registers them", self.left_out)
            self.last_error, self.left_out = None, 0
        return True
