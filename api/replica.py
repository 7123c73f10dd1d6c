"""Each API process's own read copy of the rollups: the newest checkpoints, then the journal.

No API process ever asks the worker anything: any number of them, on any machine, load
each keyed partition's newest usable checkpoint from the lake's store and fold the same
journal after it into the same `RollupStore`, so starting costs what happened since the
last checkpoint, not all of history. A process is ready once it has read up to where
the journal ended when it started.

A partition whose journal no longer holds what follows any checkpoint (workers stopped
longer than the journal's retention) is left out until a worker rebuilds it from the lake
and publishes the result as a reset; until then every answer comes from the lake, never
from incomplete rollups.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pulse.checkpoint_store import CheckpointReader, rollup_spec
from pulse.epoch import read_epoch
from pulse.kafka import (
    CLIENT_DEFAULTS,
    FETCH_MAX_WAIT_MS,
    broker_reachable,
    log_start,
    record_at,
)
from pulse.lakefs import LakeStore
from pulse.rollups import checkpoint, journal
from pulse.rollups.checkpoint import JournalFacts, Unusable
from pulse.rollups.store import RollupStore
from pulse.schemas.topics import Topics
from pulse.settings import Settings

log = logging.getLogger("pulse.replica")

RESET_WAIT_SECONDS = 60.0


class JournalReplica:
    def __init__(self, settings: Settings, store: RollupStore, lake: LakeStore) -> None:
        self.settings = settings
        self.topics = Topics.of(settings)
        self.topic = self.topics.rollups
        self.store = store
        self.lake = lake
        self.definitions = rollup_spec(settings).definitions()
        self.ready = False
        self.problem: str | None = "not started"
        self.records = 0
        self.last_record_at: float | None = None
        self.loaded_at_start: dict[int, int] = {}
        """Partition -> the checkpoint offset this process started from."""
        self.unavailable: dict[int, str] = {}
        """Partitions left out (answered from the lake), and why."""
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._position: dict[int, int] | None = None
        """Next journal offset per partition, kept across reconnects."""
        self._epoch: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal-replica")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, KafkaError):
                pass
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._tail()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep answering from what we have; retry
                self.problem = f"journal replica: {type(exc).__name__}: {exc}"
                log.warning("%s; retrying in %.0f s", self.problem, delay)
                if self._consumer is not None:
                    await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _tail(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        while not broker_reachable(bootstrap):
            self.problem = f"waiting for Kafka at {bootstrap} (PULSE_KAFKA_BOOTSTRAP)"
            await asyncio.sleep(1)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False,
            max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, auto_offset_reset="earliest",
            **CLIENT_DEFAULTS,
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            self.problem = f"waiting for a worker to create the journal topic {self.topic}"
            await asyncio.sleep(1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        if len(partitions) != self.settings.partitions:
            raise RuntimeError(
                f"the journal {self.topic} has {len(partitions)} partitions but "
                f"PULSE_PARTITIONS is {self.settings.partitions}; use the workers' value")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if self._position is None:
            self._position = await self._start_positions(consumer, tps)
        for tp in tps:
            # Resume where this process got to if the broker connection was lost.
            consumer.seek(tp, self._position.get(tp.partition, 0))
        targets = await consumer.end_offsets(tps)
        self.problem = None
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for tp, records in batches.items():
                await self._fold(tp.partition, records)
            if not self.ready and all(
                self._position.get(tp.partition, 0) >= targets[tp] for tp in tps
            ):
                self.ready = True
                log.info("rollup replica caught up: %d journal records folded after the "
                         "checkpoints", self.records)

    async def _fold(self, q: int, records: list) -> None:
        assert self._position is not None
        if q in self.unavailable:
            for record in records:  # only a reset can bring the partition back
                if journal.is_claim(record.value):
                    claim = journal.decode(record.value)
                    if isinstance(claim, journal.Claim) and claim.reset:
                        await self._load_reset(q, record.offset, claim.session)
            self._position[q] = records[-1].offset + 1
            return
        fold = self.store.fold(q)
        for record in records:
            reset = fold.feed(journal.decode(record.value), record.offset)
            if reset is not None:
                await self._load_reset(q, record.offset, reset.session)
        self._position[q] = records[-1].offset + 1
        self.records += len(records)
        self.last_record_at = time.time()

    # ---- checkpoints ---------------------------------------------------------------

    def _reader(self, q: int) -> CheckpointReader | None:
        if self._epoch is None:
            return None
        return CheckpointReader(self.lake, self._epoch, q, self.definitions)

    async def _start_positions(self, consumer: AIOKafkaConsumer,
                               tps: list[TopicPartition]) -> dict[int, int]:
        """Load each partition's newest usable checkpoint; the offset to fold from."""
        self._epoch = await read_epoch(self.settings.kafka_bootstrap, self.topics)
        positions = {}
        for tp in tps:
            start = await log_start(consumer, tp)
            body = await self._newest_usable(consumer, tp, start)
            if body is not None:
                self.store.load(tp.partition, body)
                self.loaded_at_start[tp.partition] = body.offset
                positions[tp.partition] = body.offset + 1
            elif start > 0:
                self.unavailable[tp.partition] = (
                    f"no checkpoint covers journal offsets before {start}, which the journal "
                    "no longer holds; answering from the lake until a worker rebuilds it")
                log.warning("keyed partition %d: %s", tp.partition,
                            self.unavailable[tp.partition])
                positions[tp.partition] = start
            else:
                positions[tp.partition] = 0
        return positions

    async def _newest_usable(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                             start: int) -> checkpoint.Body | None:
        reader = self._reader(tp.partition)
        if reader is None:
            return None
        for body in await asyncio.to_thread(lambda: list(reader.bodies())):
            key = None
            if body.offset >= start:
                record = await record_at(consumer, tp, body.offset)
                if record is not None:
                    key = journal.stamp_of(journal.decode(record.value))
            why = checkpoint.usable(body, JournalFacts(start, key), None)
            if why is None:
                return body
            log.warning("keyed partition %d: checkpoint at journal offset %d skipped: %s",
                        tp.partition, body.offset, why)
        return None

    async def _load_reset(self, q: int, offset: int, session: str) -> None:
        """A reset claim: the partition is now the checkpoint stamped with its offset."""
        if self._epoch is None:
            self._epoch = await read_epoch(self.settings.kafka_bootstrap, self.topics)
        reader = self._reader(q)
        deadline = time.monotonic() + RESET_WAIT_SECONDS
        while reader is not None:
            try:
                body = await asyncio.to_thread(reader.at, offset, session)
            except Unusable as exc:
                log.warning("keyed partition %d: reset at journal offset %d unusable: %s",
                            q, offset, exc)
                break
            if body is not None:
                self.store.load(q, body)
                self.unavailable.pop(q, None)
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        self.unavailable[q] = (f"the reset at journal offset {offset} names no published "
                               "checkpoint; answering from the lake until a worker rebuilds it")
        self.store.forget(q)
