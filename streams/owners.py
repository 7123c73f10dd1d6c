"""The keyed partitions this worker owns: claiming, recovering, checkpointing, writing.

Ownership of a keyed partition starts lazily, with its first message: the worker
appends a `Claim` to the partition's journal, loads the newest checkpoint that is whole,
compatible and still covered by the journal, and folds only the journal records between
it and the claim. Because the worker wrote the claim itself it knows where the journal
ends without asking the broker, and from then on readers ignore records from any
earlier owner. When nothing can say what the state was (a fresh journal on a new broker
epoch, or a journal or keyed topic that no longer holds what follows the newest
checkpoint), the partition is rebuilt from the lake and published as a reset.

The offsets of this worker's journal writes must follow one another from its claim on:
a gap means another writer got in between (a new owner's claim, most likely), so the
state here is no longer the journal's; it is dropped, and the next message claims the
partition again. Only states proved that way are checkpointed.

If a journal write fails, the in-memory state is ahead of the journal; it is thrown
away and recovered again, and the message is processed again, which the keyed-offset
and source-offset guards make exact whether or not the write had landed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS, log_start, read_until, record_at
from pulse.lakefs import LakeStore
from pulse.rollups import checkpoint, journal
from pulse.rollups.checkpoint import Body, JournalFacts, Unusable
from pulse.rollups.dedup import Run, SeenSet
from pulse.rollups.partition import PartitionState, RollupSpec
from pulse.settings import Settings

from .checkpoints import PartitionCheckpoints
from .dedup_runs import DiskRuns, RunCorrupt
from .lake_position import lake_limits
from .rebuild import rebuild

log = logging.getLogger("pulse.owners")

Send = Callable[[str, bytes, int], Awaitable[Awaitable[Any]]]
"""(topic, value, partition) -> a future of the write's acknowledgement (its metadata)."""

CHECKPOINT_RECORDS = 5_000
"""A checkpoint is also due after this many journal records, whatever the time: the
tail folded at start is what makes recovery slow."""
RESET_WAIT_SECONDS = 60.0


@dataclass
class Owned:
    """A keyed partition this worker owns, and what it knows of its journal."""

    state: PartitionState
    session: str
    runs: DiskRuns
    checkpoints: PartitionCheckpoints
    next_offset: int
    """The journal offset this worker's next write must get, if nobody else wrote."""
    last: tuple[int, int]
    """(offset, seq) of its last write (seq -1: its claim)."""
    checkpointed_at: float = field(default_factory=time.monotonic)
    records_since: int = 0
    publishing: bool = False


class PartitionOwners:
    def __init__(self, settings: Settings, spec: RollupSpec, epoch: str, journal_topic: str,
                 send: Send, lake: LakeStore) -> None:
        self.settings = settings
        self.spec = spec
        self.epoch = epoch
        self.journal_topic = journal_topic
        self.lake = lake
        self._send = send
        self._owned: dict[int, Owned] = {}
        self._runs: dict[int, DiskRuns] = {}
        """One run folder per partition for the life of the process: a released
        partition's checkpoint may still be uploading runs when it is claimed again."""
        self._locks: dict[int, asyncio.Lock] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self._claiming: set[asyncio.Task[None]] = set()

    def owned(self) -> dict[int, PartitionState]:
        return {q: owned.state for q, owned in self._owned.items()}

    async def acquire(self, partition: int) -> Owned:
        """The partition's state and this worker's session, recovering it if needed."""
        owned = self._owned.get(partition)
        if owned is not None:
            return owned
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            owned = self._owned.get(partition)
            if owned is None:
                owned = self._owned[partition] = await self._recover(partition)
            return owned

    def claim_soon(self, partitions: set[int]) -> None:
        """Start recovering `partitions` in the background (newly assigned to us)."""
        for q in sorted(partitions):
            task = asyncio.create_task(self._claim(q), name=f"claim-{q}")
            self._claiming.add(task)
            task.add_done_callback(self._claiming.discard)

    async def _claim(self, partition: int) -> None:
        try:
            await self.acquire(partition)
        except Exception as exc:  # its first message claims it again
            log.warning("keyed partition %d: claim failed (%s: %s); retrying with its next "
                        "message", partition, type(exc).__name__, exc)

    def release(self, partitions: set[int]) -> None:
        """Forget partitions moved to another worker (it will claim them itself)."""
        for q in partitions:
            self._owned.pop(q, None)

    # ---- the journal ---------------------------------------------------------------

    async def send(self, partition: int, record: journal.Record) -> Awaitable[Any]:
        """Queue a journal record; await the result to know it is written."""
        return await self._send(self.journal_topic, journal.encode(record), partition)

    async def write(self, partition: int, record: journal.Record) -> int:
        """Write a journal record and return its offset."""
        return int((await (await self.send(partition, record))).offset)

    def confirm(self, partition: int, session: str, offset: int, seq: int) -> bool:
        """Note a write of `session` landed at `offset`; False if another writer got in
        between (the partition is then released: its state is not the journal's).

        A write of an earlier session of this worker (the partition was released and
        claimed again while it was in flight) says nothing about the current one."""
        owned = self._owned.get(partition)
        if owned is None or owned.session != session:
            return True
        if offset != owned.next_offset:
            log.warning("keyed partition %d: journal offset %d, not %d: another worker "
                        "wrote in between; claiming the partition again", partition,
                        offset, owned.next_offset)
            self.release({partition})
            return False
        owned.next_offset, owned.last = offset + 1, (offset, seq)
        owned.records_since += 1
        return True

    # ---- recovery ------------------------------------------------------------------

    async def _recover(self, partition: int) -> Owned:
        started = time.monotonic()
        session = uuid.uuid4().hex
        claim = await self.write(partition, journal.Claim(session))
        runs = self._runs.get(partition)
        if runs is None:
            runs = self._runs[partition] = DiskRuns(os.path.join(
                self.settings.state_dir, "dedup", self.epoch, f"p{partition:04d}"))
        state = PartitionState(self.spec, partition, SeenSet(runs))
        checkpoints = PartitionCheckpoints(self.lake, self.epoch, partition,
                                           self.spec.definitions())
        owned = Owned(state, session, runs, checkpoints, claim + 1, (claim, -1))
        recovery = _Recovery(self, owned, claim)
        await recovery.run()
        runs.forget_others({run.name for run in owned.state.seen.runs()} | runs.pinned())
        if recovery.rebuild is not None:
            await self._rebuild(owned, recovery.rebuild)
        seconds = time.monotonic() - started
        owned.state.stats = {"recovery_seconds": round(seconds, 3),
                             "folded_at_start": recovery.folded,
                             "checkpoint_offset": -1 if recovery.from_offset is None
                             else recovery.from_offset,
                             **self._dedup_stats(owned.state)}
        log.info("keyed partition %d: claimed at journal offset %d (session %s); %s, then "
                 "folded %d records (%d events deduplicated on disk) in %.1f s", partition,
                 claim, owned.session[:12], recovery.describe(), recovery.folded,
                 len(owned.state.seen), seconds)
        return owned

    async def rebuild(self, partition: int, why: str) -> Owned:
        """Rebuild an owned partition from the lake (its keyed messages were lost)."""
        owned = await self.acquire(partition)
        await self._rebuild(owned, why)
        return owned

    async def _rebuild(self, owned: Owned, why: str) -> None:
        q = owned.state.partition
        fresh = why == "fresh"
        if not fresh:
            log.warning("keyed partition %d: %s; rebuilding it from the lake", q, why)
        if fresh:  # a new journal: the lake may remember earlier broker epochs
            below, applied, complete = {}, {}, {}

            def include(f: Any) -> bool:
                return bool(f.epoch != self.epoch)
        else:
            below, applied, complete = await lake_limits(self.settings, self.epoch)

            def include(f: Any) -> bool:
                return True
        runs = owned.runs
        seen = {q: SeenSet(runs)}
        states = await asyncio.to_thread(rebuild, self.lake, self.spec, seen, include,
                                         applied, below, complete)
        state = states[q]
        if fresh and not state.counters:
            return  # the lake holds nothing of earlier epochs for this partition
        session = uuid.uuid4().hex
        claim = await self.write(q, journal.Claim(session, reset=True))
        body = state.body(self.epoch, claim, session, -1, time.time_ns() // 1000)
        await asyncio.to_thread(runs.save_filter, claim, session,
                                [ref.run() for ref in body.runs], state.seen.filter_bytes())
        await asyncio.to_thread(owned.checkpoints.publish, body, checkpoint.encode(body), runs)
        owned.state, owned.session = state, session
        owned.next_offset, owned.last = claim + 1, (claim, -1)
        owned.checkpointed_at, owned.records_since = time.monotonic(), 0
        log.info("keyed partition %d: rebuilt from the lake and published as a reset at "
                 "journal offset %d (%d buckets, %d journeys)", q, claim, len(state.buckets),
                 sum(len(g) for g in state.journeys.values()))

    # ---- checkpoints ---------------------------------------------------------------

    def maybe_checkpoint(self, partition: int) -> None:
        """Start publishing a checkpoint of `partition` if one is due."""
        owned = self._owned.get(partition)
        if owned is None or owned.publishing or not owned.records_since:
            return
        due = time.monotonic() - owned.checkpointed_at >= self.settings.checkpoint_seconds
        if not (due or owned.records_since >= CHECKPOINT_RECORDS):
            return
        offset, seq = owned.last
        body = owned.state.body(self.epoch, offset, owned.session, seq, time.time_ns() // 1000)
        data = checkpoint.encode(body)  # now: the state changes as soon as we return
        saved_filter = owned.state.seen.filter_bytes()
        pinned = [ref.run() for ref in body.runs]
        owned.runs.pin(pinned)
        owned.publishing, owned.checkpointed_at, owned.records_since = True, time.monotonic(), 0
        task = asyncio.create_task(self._publish(owned, body, data, saved_filter, pinned))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, owned: Owned, body: Body, data: bytes, saved_filter: bytes,
                       pinned: list[Run]) -> None:
        q = owned.state.partition
        try:
            await asyncio.to_thread(owned.runs.save_filter, body.offset, body.session, pinned,
                                    saved_filter)
            name = await asyncio.to_thread(owned.checkpoints.publish, body, data, owned.runs)
            await asyncio.to_thread(owned.checkpoints.collect_garbage)
            owned.state.stats = {"checkpoint_offset": body.offset,
                                 "checkpoint_written_us": body.written_at_us,
                                 **self._dedup_stats(owned.state)}
            log.debug("keyed partition %d: checkpoint %s published", q, name)
        except OSError as exc:
            log.warning("keyed partition %d: checkpoint at journal offset %d not written (%s);"
                        " the next one will be tried in %.0f s", q, body.offset, exc,
                        self.settings.checkpoint_seconds)
        finally:
            owned.runs.unpin(pinned)
            owned.publishing = False

    async def drain(self) -> None:
        """Wait for checkpoints being published (at shutdown)."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)

    @staticmethod
    def _dedup_stats(state: PartitionState) -> dict[str, float]:
        return {"dedup_events": len(state.seen), "dedup_memory_bytes": state.seen.memory_bytes(),
                "dedup_disk_bytes": state.seen.disk_bytes()}


class _Recovery:
    """Loading the newest usable checkpoint of a just-claimed partition and folding the
    journal after it, up to the claim."""

    def __init__(self, owners: PartitionOwners, owned: Owned, claim: int) -> None:
        self.owners = owners
        self.owned = owned
        self.claim = claim
        self.folded = 0
        self.from_offset: int | None = None
        self.rebuild: str | None = None
        self.skipped = 0
        """Checkpoints this journal cannot carry on."""
        self.tp = TopicPartition(owners.journal_topic, owned.state.partition)

    def describe(self) -> str:
        if self.from_offset is None:
            return "no checkpoint"
        return f"checkpoint at journal offset {self.from_offset}"

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.owners.settings.kafka_bootstrap, enable_auto_commit=False,
            max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **CLIENT_DEFAULTS)
        await consumer.start()
        try:
            consumer.assign([self.tp])
            start = await log_start(consumer, self.tp)
            body = await self._newest_usable(consumer, start)
            state = self.owned.state
            if body is not None:
                await asyncio.to_thread(self._load, body)
                self.from_offset = body.offset
                fold = journal.JournalFold(state, body.session, body.seq)
                first = body.offset + 1
            elif start > 0:
                self.rebuild = (f"no checkpoint covers journal offsets before {start}, which "
                                "the journal no longer holds")
                return
            elif self.skipped:
                # Checkpoints of this epoch exist but none fits this journal (it was
                # recreated): its records are no guide, the lake is.
                self.rebuild = "no checkpoint fits the journal (it was recreated)"
                return
            else:
                fold, first = journal.JournalFold(state), 0
            await self._fold(consumer, fold, first)
            if self.rebuild is None and body is None and self.owned.state.keyed_next < 0:
                self.rebuild = "fresh"  # nothing was ever journaled here
        finally:
            await consumer.stop()

    async def _newest_usable(self, consumer: AIOKafkaConsumer, start: int) -> Body | None:
        checkpoints = self.owned.checkpoints
        q = self.owned.state.partition
        for body in await asyncio.to_thread(lambda: list(checkpoints.bodies())):
            facts = JournalFacts(start, await self._record_key(consumer, body.offset, start))
            why = checkpoint.usable(body, facts, self.claim)
            if why is None:
                try:
                    fetched = await asyncio.to_thread(self._adopt_runs, body)
                    if fetched:
                        log.info("keyed partition %d: %d of %d dedup runs were not whole on "
                                 "this disk; fetched from the lake", q, fetched, len(body.runs))
                    return body
                except (RunCorrupt, FileNotFoundError, OSError) as exc:
                    why = f"its dedup runs cannot be had ({exc})"
            else:
                self.skipped += 1
            log.warning("keyed partition %d: checkpoint at journal offset %d skipped: %s",
                        q, body.offset, why)
        return None

    def _load(self, body: Body) -> None:
        """Become `body`'s state, with the dedup filter saved with it if this disk has it.
        Off the event loop: without that filter it is rebuilt from every digest (about
        0.2 s per million), long enough to miss the group's heartbeats."""
        self.owned.state.load(body, self.owned.runs.load_filter(
            body.offset, body.session, [ref.run() for ref in body.runs]))

    def _adopt_runs(self, body: Body) -> int:
        """Make the runs `body` names usable here; how many had to come from the lake."""
        return sum(self.owned.runs.adopt(ref.run(), self.owned.checkpoints.fetch_run)
                   for ref in body.runs)

    async def _record_key(self, consumer: AIOKafkaConsumer, offset: int,
                          start: int) -> tuple[str, int] | None:
        if offset < start:
            return None
        record = await record_at(consumer, self.tp, offset)
        return None if record is None else journal.stamp_of(journal.decode(record.value))

    async def _fold(self, consumer: AIOKafkaConsumer, fold: journal.JournalFold,
                    first: int) -> None:
        if first < self.claim:
            async for batch in read_until(consumer, self.tp, self.claim - 1, start=first):
                for record in batch:
                    reset = fold.feed(journal.decode(record.value), record.offset)
                    if reset is not None and not await self._load_reset(record.offset,
                                                                        reset.session):
                        self.rebuild = (f"the reset at journal offset {record.offset} names a "
                                        "checkpoint that was never published")
                        return
                self.folded += len(batch)
        fold.feed(journal.Claim(self.owned.session), self.claim)

    async def _load_reset(self, offset: int, session: str) -> bool:
        deadline = time.monotonic() + RESET_WAIT_SECONDS
        while True:
            try:
                body = await asyncio.to_thread(self.owned.checkpoints.at, offset, session)
            except Unusable as exc:
                log.warning("keyed partition %d: the reset checkpoint at journal offset %d is "
                            "unusable: %s", self.owned.state.partition, offset, exc)
                return False
            if body is not None:
                await asyncio.to_thread(self._adopt_runs, body)
                await asyncio.to_thread(self._load, body)
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
