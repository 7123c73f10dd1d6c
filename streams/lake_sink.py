"""Raw events and dead letters into the Parquet lake, few files at a time, durably.

Each input partition buffers what it has read into an open flush. A flush is sealed
when it holds `PULSE_LAKE_FLUSH_ROWS` rows or has waited `PULSE_LAKE_FLUSH_SECONDS`,
when it is among the largest while the rows held exceed the sink's bytes, or when it
holds the tail of a backlog that reading has just caught up with (`LakeSink.caught_up`);
then it is written, beside those of other partitions, and only then are its offsets
committed. The durability order for one
flush is:

1. write an intent marker naming the flush's offset range;
2. write one Parquet file per (tenant, date) and per dead-letter date, each whole or
   not at all (`pulse.lakefs`: temp file, fsync, rename on a folder; one PUT on S3);
3. commit the input offsets past the flush.

If the worker dies between 1 and 3, the next owner finds the marker, seals its first
flush at exactly the same last offset and so rewrites exactly the same file names,
whatever the timing of that second run. A failed write aborts the flush before step
3 and is retried with backoff; nothing is committed past data not in the lake.

With Iceberg on (`streams.iceberg`), written files then go to its committer with the
size and statistics of the footers just written, and the marker also lists the files of
the partition written but not yet known to be in the tables, statistics included, for
the next owner to commit if this worker dies first (without reading them back).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pulse.lakefs import LakeStore
from pulse.rollups.journal import LakeMark
from pulse.rollups.windows import DAY_US
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA, UTC_MICROS, events_to_table
from pulse.schemas.events import Event

from .iceberg import Committer
from .iceberg_files import FileStats, TableFile, flush_files, source_key, writer_plan

FOLDER_CHUNKS = 64
"""Poll tables one folder keeps before they are merged into one (fewer, larger buffers)."""
PARALLEL_PUTS = 4
"""Files of one flush written at once: a flush touches a file per tenant and day, and
each costs a round trip to an object store (or an fsync on a folder), so one after
another they leave the sink waiting on the network rather than on the CPU."""
PARALLEL_FLUSHES = 3
"""Flushes (of different partitions) written and committed at once. A flush waits on
its intent marker, its files and its offset commit one after another, and an fsync
now and then takes a hundred milliseconds or more: written one at a time, flushes
fell behind reading, which then waited on the sink's bytes for 13 % of a
`pulse bench ingest` run."""
IDLE_MARK_SECONDS = 5.0
"""How often partitions with nothing to write report their progress (see `mark_idle`)."""

log = logging.getLogger("pulse.lake")


class LakeOrderError(RuntimeError):
    """A record arrived out of offset order; buffering it would corrupt a flush."""


@dataclass
class DeadLetter:
    raw: bytes
    reason: str
    error: str
    offset: int
    timestamp_us: int


@dataclass
class Flush:
    """The rows of one input partition between two offsets, grouped by lake folder."""

    partition: int
    first: int
    last: int = -1
    events: dict[tuple[str, int], FolderRows] = field(default_factory=dict)
    """(tenant, day) -> the folder's events."""
    dead: dict[int, list[DeadLetter]] = field(default_factory=dict)
    rows: int = 0
    bytes: int = 0
    """Memory the buffered rows take (Arrow buffers and dead letters' bytes)."""
    opened_at: float = 0.0
    as_of_us: int = 0
    backlog: bool = False
    """Some of its rows were read behind the end of the partition's log (see
    `LakeSink.caught_up`)."""

    def add_event(self, event: Event, offset: int) -> None:
        """One event into its folder, for tools that build a flush by hand (the sink
        adds whole polls with `add_table`)."""
        folder = self.events.setdefault((event.tenant_id, event.occurred_us // DAY_US),
                                        FolderRows())
        folder.events.append(event)
        folder.offsets.append(offset)

    def add_table(self, events: pa.Table) -> None:
        """A poll's events (`POLL_SCHEMA`, in offset order) into their folders."""
        for key, rows in split_by_folder(events):
            self.events.setdefault(key, FolderRows()).add(rows)
        self.bytes += events.nbytes


@dataclass
class FolderRows:
    """One lake folder's part of a flush: Arrow tables (a poll's share each), and the
    events a tool added one by one."""

    tables: list[pa.Table] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def add(self, rows: pa.Table) -> None:
        self.tables.append(rows)
        if len(self.tables) >= FOLDER_CHUNKS:  # many small polls: keep buffers few
            self.tables = [pa.concat_tables(self.tables).combine_chunks()]

    def table(self, partition: int) -> pa.Table:
        if self.events:
            self.tables.append(events_to_table(self.events, partition, self.offsets,
                                               time.time_ns() // 1000))
            self.events, self.offsets = [], []
        return self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)


def split_by_folder(events: pa.Table) -> list[tuple[tuple[str, int], pa.Table]]:
    """`POLL_SCHEMA` rows as ((tenant, UTC day), the lake columns of its rows), rows
    kept in order within each folder."""
    if not events.num_rows:
        return []
    tenants = pc.dictionary_encode(events.column("tenant_id").combine_chunks())
    codes = tenants.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    days = events.column("occurred_at").combine_chunks().cast(pa.int64()).to_numpy() // DAY_US
    first_day = int(days.min())
    keys = codes * (int(days.max()) - first_day + 1) + (days - first_day)
    lake_columns = events.select(EVENT_SCHEMA.names)
    names = tenants.dictionary.to_pylist()
    if keys.min() == keys.max():
        return [((names[codes[0]], int(days[0])), lake_columns)]
    # One take into folder order (stable: offsets stay in order), then slices of it.
    order = np.argsort(keys, kind="stable")
    ordered, keys = lake_columns.take(order), keys[order]
    starts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist(), len(keys)]
    return [((names[codes[order[a]]], int(days[order[a]])), ordered.slice(a, b - a))
            for a, b in itertools.pairwise(starts)]


class LakeWriter:
    """Writes flushes into the lake's store (blocking; called from a thread)."""

    def __init__(self, store: LakeStore, epoch: str, topic: str,
                 iceberg: Committer | None = None) -> None:
        self.store = store
        self.epoch = epoch
        self.topic = topic
        self.iceberg = iceberg
        self._recovered: dict[int, list[TableFile]] = {}
        self._stats: dict[int, tuple[Flush, dict[str, FileStats]]] = {}
        """Per partition, the last flush written and each of its files' statistics (for
        Iceberg)."""
        self._puts = ThreadPoolExecutor(PARALLEL_PUTS, thread_name_prefix="lake-put")
        if iceberg is not None:  # pyiceberg imported here, not by eight puts at once
            for kind in (lake.EVENTS, lake.DEAD_LETTERS):
                writer_plan(kind)

    def _intent_path(self, partition: int) -> str:
        return f"_pulse/ingest/{self.epoch}/p{partition:04d}.json"

    def read_intent(self, partition: int) -> tuple[int, int] | None:
        """The interrupted flush an earlier owner left, if any. Asked when a partition is
        assigned, before anything of it is read: while the store does not answer, it is
        asked again (with backoff), since reading on without it could double a flush."""
        delay = 0.5
        while True:
            try:
                data = json.loads(self.store.get(self._intent_path(partition)))
                self._recovered[partition] = [TableFile.from_json(f)
                                              for f in data.get("iceberg", [])]
                return int(data["first"]), int(data["last"])
            except FileNotFoundError:
                return None
            except OSError as exc:
                log.error("partition %d: cannot read its lake intent marker (%s); retrying in "
                          "%.1f s", partition, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def write_intent(self, flush: Flush) -> None:
        intent: dict[str, object] = {"first": flush.first, "last": flush.last}
        if self.iceberg is not None:
            waiting = self.iceberg.pending(source_key(self.epoch, flush.partition))
            intent["iceberg"] = [f.to_json() for f in waiting + self.files(flush)]
        self.store.put(self._intent_path(flush.partition), json.dumps(intent).encode())

    def files(self, flush: Flush) -> list[TableFile]:
        return flush_files(self.epoch, flush.partition, flush.first, flush.last,
                           flush.events, flush.dead)

    def written(self, flush: Flush) -> None:
        """The flush is in the lake and its offsets committed: on to Iceberg, with the
        statistics `write` recorded."""
        if self.iceberg is not None:
            made = self._stats.pop(flush.partition, None)
            stats = made[1] if made is not None and made[0] is flush else {}
            self.iceberg.add(replace(f, stats=stats.get(f.rel)) for f in self.files(flush))

    def recover(self, partition: int, position: int) -> None:
        """Hand Iceberg what an earlier owner wrote whole (below `position`) and may not
        have committed; the marks will drop what it did commit."""
        files = self._recovered.pop(partition, [])
        if self.iceberg is not None:
            self.iceberg.add((f for f in files if f.last < position), overdue=True)

    def handed_over(self, partition: int) -> None:
        """`partition` went to another owner: see `Committer.handed_over`."""
        if self.iceberg is not None:
            self.iceberg.handed_over(source_key(self.epoch, partition))

    def iceberg_report(self, partition: int) -> tuple[int, str | None]:
        """(files of `partition` waiting for Iceberg, the committer's error), for its mark."""
        if self.iceberg is None:
            return 0, None
        return self.iceberg.waiting(source_key(self.epoch, partition)), self.iceberg.problem()

    def _put(self, kind: str, rel: str, table: pa.Table, stats: dict[str, FileStats]) -> int:
        """Write one file; with Iceberg on, record its statistics from the footer the
        writer produced, so that no commit reads it back. Returns its size."""
        if self.iceberg is None:
            return self.store.put_parquet(rel, table)
        footer: list[pq.FileMetaData] = []
        size = self.store.put_with(rel, lambda fh: pq.write_table(
            table, fh, **lake.PARQUET_OPTIONS, metadata_collector=footer))
        stats[rel] = FileStats.of(footer[0], size, writer_plan(kind))
        return size

    def write(self, flush: Flush) -> tuple[int, int]:
        """Write every file of `flush`; returns (files, bytes). Every write has ended
        when it returns or raises, so a retry never races a write of the same name."""
        name = lake.LakeFile(self.epoch, flush.partition, flush.first, flush.last).name
        stats: dict[str, FileStats] = {}
        puts = [(lake.EVENTS, f"{lake.event_dir(tenant, day)}/{name}",
                 folder.table(flush.partition)) for (tenant, day), folder in flush.events.items()]
        puts += [(lake.DEAD_LETTERS, f"{lake.dead_letter_dir(day)}/{name}",
                  self._dead_letters(flush.partition, letters))
                 for day, letters in flush.dead.items()]
        done, _ = wait([self._puts.submit(self._put, kind, rel, table, stats)
                        for kind, rel, table in puts])
        size = sum(future.result() for future in done)
        self._stats[flush.partition] = (flush, stats)
        return len(puts), size

    def _dead_letters(self, partition: int, letters: list[DeadLetter]) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array([d.raw for d in letters], pa.binary()),
                pa.array([d.reason for d in letters], pa.string()),
                pa.array([d.error for d in letters], pa.string()),
                pa.array([self.topic] * len(letters), pa.string()),
                pa.array([partition] * len(letters), pa.int32()),
                pa.array([d.offset for d in letters], pa.int64()),
                pa.array([d.timestamp_us for d in letters], pa.int64()).cast(UTC_MICROS),
            ],
            schema=DEAD_LETTER_SCHEMA,
        )


@dataclass
class SinkStats:
    flushes: int = 0
    files: int = 0
    bytes: int = 0
    rows: int = 0
    failures: int = 0
    last_error: str | None = None
    last_flush_at: float | None = None


class LakeSink:
    """Buffers, seals and writes flushes, then commits: up to `PARALLEL_FLUSHES` at once,
    at most one per partition, so each partition's flushes land and commit in order."""

    def __init__(
        self,
        writer: LakeWriter,
        flush_rows: int,
        flush_seconds: float,
        commit: Callable[[int, int], Awaitable[bool]],
        on_mark: Callable[[int, LakeMark], None],
        max_bytes: int,
    ) -> None:
        self.writer = writer
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_bytes = max_bytes
        self._commit = commit
        self._on_mark = on_mark
        self._marks: dict[int, LakeMark] = {}
        self._failures: dict[int, int] = {}
        self._open: dict[int, Flush] = {}
        self._forced_last: dict[int, int] = {}
        self._sealed: deque[Flush] = deque()
        self._tail_sealed_at: dict[int, float] = {}
        self._writing: dict[int, asyncio.Task[None]] = {}
        """Partition -> the task writing its oldest sealed flush."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._idle_marked_at = 0.0
        self.stats = SinkStats()

    # ---- partitions come and go ----------------------------------------------------

    def assign(self, partition: int, position: int, intent: tuple[int, int] | None) -> None:
        """Start buffering `partition` at `position` (its committed offset).

        `intent` is what `LakeWriter.read_intent` found for the partition.
        """
        self.writer.recover(partition, position)
        self._open[partition] = Flush(partition, position)
        if intent is not None and intent[0] == position:
            # An earlier owner wrote (some of) this range and died before committing:
            # end the first flush where it did, so its files are rewritten, not doubled.
            self._forced_last[partition] = intent[1]
            log.info("partition %d: resuming an interrupted lake flush %d..%d",
                     partition, *intent)

    async def revoke(self, partition: int) -> None:
        """Stop buffering `partition`; what is not committed will be read again. A write
        of it already under way ends first; no other starts."""
        self._open.pop(partition, None)
        self._forced_last.pop(partition, None)
        self._tail_sealed_at.pop(partition, None)
        self._sealed = deque(f for f in self._sealed if f.partition != partition)
        writing = self._writing.get(partition)
        if writing is not None:
            await asyncio.wait([writing])
        self.writer.handed_over(partition)

    # ---- rows in -------------------------------------------------------------------

    def add_rows(self, partition: int, offsets: Sequence[int], events: pa.Table,
                 dead: list[DeadLetter], backlog: bool = False) -> None:
        """A poll's rows of one partition into its open flush: the offsets of all its
        records in order, its events (`POLL_SCHEMA`) and its dead letters; `backlog`
        says they were read behind the end of the partition's log (see `caught_up`)."""
        forced = self._forced_last.get(partition)
        if forced is not None and offsets and offsets[-1] > forced:
            cut = bisect.bisect_right(offsets, forced)
            before = pc.less_equal(events.column("kafka_offset"), forced)
            self._add(partition, offsets[:cut], events.filter(before),
                      [d for d in dead if d.offset <= forced])
            self._seal(partition, last=forced)
            del self._forced_last[partition]
            offsets, events = offsets[cut:], events.filter(pc.invert(before))
            dead = [d for d in dead if d.offset > forced]
        self._add(partition, offsets, events, dead)
        if backlog and offsets and partition in self._open:
            self._open[partition].backlog = True

    def _add(self, partition: int, offsets: Sequence[int], events: pa.Table,
             dead: list[DeadLetter]) -> None:
        if not offsets:
            return
        flush = self._open[partition]
        if offsets[0] < flush.first or (flush.rows and offsets[0] <= flush.last):
            raise LakeOrderError(
                f"partition {partition}: offset {offsets[0]} arrived after offsets up to "
                f"{flush.last} (open flush starts at {flush.first})")
        if not flush.rows:
            flush.opened_at = time.monotonic()
        flush.rows += len(offsets)
        flush.last = offsets[-1]
        flush.add_table(events)
        for letter in dead:
            flush.dead.setdefault(letter.timestamp_us // DAY_US, []).append(letter)
            flush.bytes += len(letter.raw) + len(letter.error)

    def note_progress(self, partition: int, as_of_us: int) -> None:
        """Everything of `partition` produced before `as_of_us` is now in its open flush."""
        flush = self._open.get(partition)
        if flush is not None:
            flush.as_of_us = max(flush.as_of_us, as_of_us)
            forced = self._forced_last.get(partition)
            if forced is not None and flush.last == forced:
                self._seal(partition, last=forced)
                del self._forced_last[partition]

    def caught_up(self, partition: int, now: float | None = None) -> None:
        """`partition` has been read to the end of its log: seal its open flush now if
        it holds rows of a backlog, rather than wait out `flush_seconds`.

        Waiting only gathers rows into larger files, and the rows that would come next
        arrive at the live rate, not the backlog's: the tail of a catch-up (a restart,
        a burst) becomes durable as soon as it is read. A partition whose reading keeps
        falling behind and catching up seals this way at most once per
        `flush_seconds`, so files are never more than twice as many as the timer's.
        """
        now = time.monotonic() if now is None else now
        flush = self._open.get(partition)
        if (flush is None or not flush.backlog or not flush.rows
                or partition in self._forced_last
                or now - self._tail_sealed_at.get(partition, -math.inf) < self.flush_seconds):
            return
        self._tail_sealed_at[partition] = now
        self._seal(partition, flush.last)

    def mark_idle(self) -> None:
        """Every `IDLE_MARK_SECONDS`, report the progress of partitions with nothing left
        to write: their lake is complete up to it, as a flush would say. Without this,
        lake-backed answers would keep the time of a partition's last event as their
        `as_of` for as long as no new event comes to it."""
        now = time.monotonic()
        if now - self._idle_marked_at < IDLE_MARK_SECONDS:
            return
        self._idle_marked_at = now
        busy = {f.partition for f in self._sealed} | set(self._forced_last)
        for partition, flush in self._open.items():
            mark = self._marks.get(partition)
            if (not flush.rows and partition not in busy
                    and (mark is None or flush.as_of_us > mark.as_of_us)):
                self._mark(partition, as_of_us=flush.as_of_us)

    def _seal(self, partition: int, last: int) -> None:
        flush = self._open[partition]
        flush.last = last
        log.debug("partition %d: sealed flush %d..%d (%d rows)", partition, flush.first, last,
                  flush.rows)
        self._sealed.append(flush)
        self._open[partition] = Flush(partition, last + 1, as_of_us=flush.as_of_us)
        self._idle.clear()

    def next_offset(self, partition: int) -> int | None:
        """The offset the open flush of `partition` expects next (None: not open)."""
        flush = self._open.get(partition)
        if flush is None:
            return None
        return flush.last + 1 if flush.rows else flush.first

    @property
    def pending_bytes(self) -> int:
        """Memory held by rows not yet in the lake (what bounds reading ahead)."""
        return sum(f.bytes for f in self._sealed) + sum(f.bytes for f in self._open.values())

    # ---- flushing ------------------------------------------------------------------

    def seal_due(self, now: float | None = None, everything: bool = False) -> None:
        """Seal the flushes that are full or old (or, with `everything`, every one).

        While the rows held exceed `max_bytes`, the lake is slower than reading: the
        largest open flushes are sealed too, enough to keep every writer busy. Sealing
        all of them instead made each partition's files smaller whenever the bytes ran
        over, and more files cost more per row (a third more files at the same rate)."""
        now = time.monotonic() if now is None else now
        ready = [(p, f) for p, f in self._open.items() if f.rows and p not in self._forced_last]
        for partition, flush in ready:
            if everything or flush.rows >= self.flush_rows or (
                now - flush.opened_at >= self.flush_seconds
            ):
                self._seal(partition, flush.last)
        if self.pending_bytes > self.max_bytes:
            for partition, flush in sorted(ready, key=lambda pf: -pf[1].bytes):
                if len(self._sealed) >= PARALLEL_FLUSHES:
                    break
                if self._open[partition] is flush:
                    self._seal(partition, flush.last)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Write sealed flushes in order until `stopping()` and nothing is left; the
        Iceberg committer (if any) runs beside, and commits once more at the end."""
        iceberg = self.writer.iceberg
        if iceberg is None:
            return await self._run(stopping)
        done = False
        committing = asyncio.create_task(iceberg.run(lambda: done, self._iceberg_changed),
                                         name="iceberg-commit")
        try:
            await self._run(stopping)
        finally:
            done = True
            await committing

    async def _run(self, stopping: Callable[[], bool]) -> None:
        wake = asyncio.Event()
        try:
            while True:
                for partition, task in list(self._writing.items()):
                    if task.done():
                        del self._writing[partition]
                        task.result()  # a write's unexpected error stops the sink
                self.seal_due()
                for flush in list(self._sealed):
                    if len(self._writing) >= PARALLEL_FLUSHES:
                        break
                    if flush.partition not in self._writing:
                        self._writing[flush.partition] = asyncio.create_task(
                            self._write(flush, wake), name=f"lake-flush-p{flush.partition}")
                if not self._sealed and not self._writing:
                    self._idle.set()
                    if stopping():
                        return
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.05)
        finally:
            for task in self._writing.values():
                task.cancel()

    async def _write(self, flush: Flush, done: asyncio.Event) -> None:
        """Write and commit `flush`, the oldest sealed one of its partition, retrying with
        backoff while the store fails: nothing is committed past it until then."""
        backoff = 0.5
        try:
            while True:
                try:
                    await self._write_and_commit(flush)
                    break
                except OSError as exc:
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self._mark(flush.partition, error=self.stats.last_error)
                    log.error("lake write failed for partition %d offsets %d..%d: %s; "
                              "retrying in %.1f s (nothing is committed past it)",
                              flush.partition, flush.first, flush.last, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            self._sealed = deque(f for f in self._sealed if f is not flush)
        finally:
            done.set()

    async def _write_and_commit(self, flush: Flush) -> None:
        # Step 1: the intent marker; step 2: the files (both off the event loop).
        await asyncio.to_thread(self.writer.write_intent, flush)
        files, size = await asyncio.to_thread(self.writer.write, flush)
        # Step 3: only now may the offsets move past this flush.
        if not await self._commit(flush.partition, flush.last + 1):
            return  # its new owner rewrites these files, and commits them to Iceberg
        self.writer.written(flush)
        self.stats.flushes += 1
        self.stats.files += files
        self.stats.bytes += size
        self.stats.rows += flush.rows
        self.stats.last_flush_at = time.time()
        log.debug("partition %d: flushed %d..%d, %d files, %d bytes", flush.partition,
                  flush.first, flush.last, files, size)
        self._mark(flush.partition, as_of_us=flush.as_of_us,
                   flushed_at_us=int(self.stats.last_flush_at * 1e6))

    def _mark(self, partition: int, as_of_us: int | None = None,
              flushed_at_us: int | None = None, error: str | None = None) -> None:
        """Report a partition's lake progress, or its write failure, to the rollups."""
        old = self._marks.get(partition, LakeMark(0, 0))
        if error is not None:
            self._failures[partition] = self._failures.get(partition, 0) + 1
        mark = LakeMark(old.as_of_us if as_of_us is None else as_of_us,
                        old.flushed_at_us if flushed_at_us is None else flushed_at_us,
                        self._failures.get(partition, 0), error,
                        *self.writer.iceberg_report(partition))
        self._marks[partition] = mark
        self._on_mark(partition, mark)

    def _iceberg_changed(self) -> None:
        """After each Iceberg commit attempt, its error (or none) and what still waits
        go out with the marks of this worker's partitions, as lake write errors do."""
        for partition in list(self._open):
            old = self._marks.get(partition)
            if old is None:
                continue  # its first mark will carry them
            waiting, error = self.writer.iceberg_report(partition)
            if (old.iceberg_waiting, old.iceberg_error) != (waiting, error):
                mark = msgspec.structs.replace(old, iceberg_waiting=waiting, iceberg_error=error)
                self._marks[partition] = mark
                self._on_mark(partition, mark)

    async def drain(self) -> None:
        """Seal everything open and wait until it is written (used at shutdown)."""
        self.seal_due(everything=True)
        await self._idle.wait()
