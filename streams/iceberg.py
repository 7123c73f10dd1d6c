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
(`commit.retry.num-retries` 0): it would re-apply the append without re-checking.

What is written but not yet committed is also kept in the partition's intent marker
(`streams.lake_sink`), so a worker killed before its commit leaves the next owner the
list to commit, and one killed after it leaves a list the marks then rule out.

Commits are batched (`PULSE_ICEBERG_COMMIT_SECONDS`) to keep snapshots few and
contention low. A catalog that does not answer delays commits only: the committer runs
beside the sink, which never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pulse.lakefs import LakeStore
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pulse.settings import Settings

log = logging.getLogger("pulse.iceberg")

NAMESPACE = "pulse"
OFFSETS = "pulse.offsets."
COMMIT_ATTEMPTS = 20
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",  # see the module doc: Pulse re-checks, then retries
    "commit.manifest-merge.enabled": "true",  # months of appends keep few manifests
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}


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


@dataclass(frozen=True)
class TableFile:
    """One lake file as the Iceberg committer sees it."""

    rel: str
    kind: str
    """`lake.EVENTS` or `lake.DEAD_LETTERS`: the table it goes to."""
    tenant_id: str | None
    day: int
    source: str
    """The summary key of its (epoch, input partition)."""
    last: int

    def to_json(self) -> list[Any]:
        return [self.rel, self.kind, self.tenant_id, self.day, self.source, self.last]

    @classmethod
    def from_json(cls, data: list[Any]) -> TableFile:
        rel, kind, tenant_id, day, source, last = data
        return cls(rel, kind, tenant_id, int(day), source, int(last))


def source_key(epoch: str, partition: int) -> str:
    return f"{OFFSETS}{epoch}.{partition}"


def flush_files(epoch: str, partition: int, first: int, last: int,
                event_folders: Iterable[tuple[str, int]],
                dead_days: Iterable[int]) -> list[TableFile]:
    """The files a flush writes (their names are known before they are written)."""
    name = lake.LakeFile(epoch, partition, first, last).name
    source = source_key(epoch, partition)
    out = [TableFile(f"{lake.event_dir(t, d)}/{name}", lake.EVENTS, t, d, source, last)
           for t, d in event_folders]
    out += [TableFile(f"{lake.dead_letter_dir(d)}/{name}", lake.DEAD_LETTERS, None, d, source,
                      last) for d in dead_days]
    return out


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
            tenant = len(EVENT_SCHEMA) + 1
            arrow = pa.schema([*EVENT_SCHEMA, pa.field("tenant_id", pa.string(), metadata={
                b"PARQUET:field_id": str(tenant).encode()})])
            spec = PartitionSpec(
                PartitionField(tenant, 1000, IdentityTransform(), "tenant_id"),
                PartitionField(EVENT_SCHEMA.get_field_index("occurred_at") + 1, 1001,
                               DayTransform(), "occurred_at_day"))
        else:
            arrow = DEAD_LETTER_SCHEMA
            spec = PartitionSpec(PartitionField(
                DEAD_LETTER_SCHEMA.get_field_index("received_at") + 1, 1000, DayTransform(),
                "received_at_day"))
        return catalog.create_table_if_not_exists(
            f"{NAMESPACE}.{kind}", schema=pyarrow_to_schema(arrow), partition_spec=spec,
            location=self.store.uri(f"iceberg/{kind}"), properties=TABLE_PROPERTIES)


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


def data_file(table: Any, store: LakeStore, ref: TableFile) -> Any:
    """The Iceberg data file entry of a lake file, its statistics from its footer."""
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record

    path = store.arrow_path(ref.rel)
    with store.arrow_fs.open_input_file(path) as fh:
        size = fh.size()
        metadata = pq.read_metadata(fh)
    schema = table.schema()
    stats = data_file_statistics_from_parquet_metadata(
        metadata, compute_statistics_plan(schema, table.metadata.properties),
        parquet_path_to_id_mapping(schema))
    partition = Record(ref.tenant_id, ref.day) if ref.kind == lake.EVENTS else Record(ref.day)
    return DataFile.from_args(
        content=DataFileContent.DATA, file_path=table_path(store, ref.rel),
        file_format=FileFormat.PARQUET,
        partition=partition, file_size_in_bytes=size, sort_order_id=None,
        spec_id=table.metadata.default_spec_id, equality_ids=None, key_metadata=None,
        **stats.to_serialized_dict())


def commit(table: Any, store: LakeStore, files: list[TableFile]) -> int:
    """Add the files the table does not hold yet, in one snapshot; returns how many.

    Refresh, drop what the marks cover, commit with the merged marks; if another
    writer committed in between, all of that again.
    """
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import OperationalError

    made: dict[str, Any] = {}  # each file's entry is read from its footer once
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        done = marks(table)
        todo = [f for f in files if done.get(f.source, -1) < f.last]
        if not todo:
            return 0
        raised = dict(done)
        for f in todo:
            raised[f.source] = max(raised.get(f.source, -1), f.last)
        entries = [made.get(f.rel) or made.setdefault(f.rel, data_file(table, store, f))
                   for f in todo]
        try:
            with table.transaction() as tx, tx.update_snapshot(snapshot_properties={
                    k: str(v) for k, v in raised.items()}).merge_append() as append:
                for entry in entries:
                    append.append_data_file(entry)
            return len(todo)
        except (CommitFailedException, OperationalError):  # another writer, a locked sqlite
            time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
    raise RuntimeError(f"{len(files)} files not committed after {COMMIT_ATTEMPTS} conflicts")


def register(table: Any, store: LakeStore, files: list[TableFile],
             unreadable: list[tuple[str, str]] | None = None) -> int:
    """Add the files the table does not hold, by path (not by marks), raising their
    sources' marks: `pulse compact` registers so the lake's final files that no worker
    committed (written before Iceberg was on, or by a worker killed before its commit
    whose flushes no owner read back). One snapshot, so that no worker sees a raised mark
    before every file under it is in. Returns how many; files that cannot be read are
    left out and listed in `unreadable` (path, why)."""
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import OperationalError

    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        held = set(table.inspect.files().column("file_path").to_pylist())
        todo = [f for f in files if table_path(store, f.rel) not in held]
        if not todo:
            return 0
        entries = []
        for f in todo:
            try:
                entries.append((f, data_file(table, store, f)))
            except (OSError, pa.ArrowException) as exc:  # the caller says so
                if unreadable is not None and attempt == 0:
                    unreadable.append((f.rel, f"cannot read {store.uri(f.rel)}: {exc}"))
        if not entries:
            return 0
        raised = marks(table)
        for f, _ in entries:
            raised[f.source] = max(raised.get(f.source, -1), f.last)
        try:
            with table.transaction() as tx, tx.update_snapshot(snapshot_properties={
                    k: str(v) for k, v in raised.items()}).merge_append() as append:
                for _, entry in entries:
                    append.append_data_file(entry)
            return len(entries)
        except (CommitFailedException, OperationalError):
            time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
    raise RuntimeError(f"{len(files)} files not registered after {COMMIT_ATTEMPTS} conflicts")


def swap(table: Any, store: LakeStore,
         swaps: list[tuple[list[str], TableFile]]) -> list[tuple[list[str], TableFile]]:
    """`pulse compact`'s merged files in place of their inputs, all in one overwrite
    snapshot (the marks carried on). Returns the swaps the table now has: those done
    here, and those done before (by a run killed before it deleted the inputs); a swap
    one of whose inputs the table lacks is left out, changing nothing."""
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import OperationalError

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
        entries = [data_file(table, store, merged) for _, merged in todo]
        try:
            with table.transaction() as tx, tx.update_snapshot(snapshot_properties={
                    k: str(v) for k, v in marks(table).items()}).overwrite() as overwrite:
                for (inputs, _), entry in zip(todo, entries, strict=True):
                    for rel in inputs:
                        overwrite.delete_data_file(held[table_path(store, rel)])
                    overwrite.append_data_file(entry)
            return done + todo
        except (CommitFailedException, OperationalError):
            time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
    raise RuntimeError(f"{len(swaps)} merged files not swapped in after {COMMIT_ATTEMPTS} "
                       "conflicts")


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
    """Batches the sink's written files and commits them every `interval` seconds."""

    def __init__(self, tables: Tables, interval: float) -> None:
        self.tables = tables
        self.interval = interval
        self._pending: dict[str, TableFile] = {}
        """rel -> file, written and not known to be committed."""
        self.committed = 0
        self.failures = 0
        self.last_error: str | None = None

    def add(self, files: Iterable[TableFile]) -> None:
        """Files of whole flushes: a flush's files must be committed together, since one
        of them in the table raises its source's mark over all of them. One update, so
        that `commit_now` in its thread never takes a part of them."""
        self._pending.update({f.rel: f for f in files})

    def pending(self, source: str) -> list[TableFile]:
        """What of `source` is written and not yet known to be in the table."""
        return [f for f in self._pending.values() if f.source == source]

    def commit_now(self) -> None:
        """Commit everything pending (blocking; run in a thread)."""
        batch = list(self._pending.values())
        if not batch:
            return
        tables = self.tables.get()
        for kind, table in tables.items():
            mine = [f for f in batch if f.kind == kind]
            if mine:
                self.committed += commit(table, self.tables.store, mine)
        for f in batch:
            if self._pending.get(f.rel) is f:
                del self._pending[f.rel]

    async def run(self, stopping: Any) -> None:
        """Commit every `interval` until `stopping()`, then once more."""
        delay = self.interval
        while True:
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not stopping():
                await asyncio.sleep(0.1)
            try:
                await asyncio.to_thread(self.commit_now)
                delay = self.interval
                self.last_error = None
            except Exception as exc:  # the catalog or store: never stop the sink for it
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.tables.forget()
                log.error("Iceberg commit failed (%s): %d files wait; retrying in %.0f s. "
                          "Check PULSE_ICEBERG_CATALOG", self.last_error.splitlines()[0],
                          len(self._pending), min(delay, 30.0))
                delay = min(max(delay, 1.0) * 2, 60.0)
                if stopping():
                    return
                continue
            if stopping():
                return
