"""The keyed partitions this worker owns: claiming, recovering and writing their journal.

Ownership of a keyed partition starts lazily, with its first message: the worker
appends a `Claim` to the partition's journal, then folds every record up to that claim
into a fresh `PartitionState`. Because the worker wrote the claim itself it knows where
the journal ends without asking the broker, and from then on readers ignore records
from any earlier owner. A journal with nothing before the claim is a new log (the
embedded broker forgets its topics on restart): the partition is then rebuilt from
the lake files of earlier epochs, published as a reset, and carries on.

If a journal write fails, the in-memory state is ahead of the journal; it is thrown
away and recovered again, and the batch is processed again, which the source-offset
guard makes exact whether or not the write had landed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS, read_until
from pulse.lakefs import LakeStore
from pulse.rollups import journal
from pulse.rollups.partition import PartitionState, RollupSpec
from pulse.settings import Settings

from .bootstrap import rebuild_partition

log = logging.getLogger("pulse.owners")

Send = Callable[[str, bytes, int], Awaitable[Awaitable[Any]]]
"""(topic, value, partition) -> a future of the write's acknowledgement (its metadata)."""


class PartitionOwners:
    def __init__(self, settings: Settings, spec: RollupSpec, epoch: str, journal_topic: str,
                 send: Send) -> None:
        self.settings = settings
        self.spec = spec
        self.epoch = epoch
        self.journal_topic = journal_topic
        self._send = send
        self._states: dict[int, tuple[PartitionState, str]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def owned(self) -> dict[int, PartitionState]:
        return {q: state for q, (state, _) in self._states.items()}

    async def acquire(self, partition: int) -> tuple[PartitionState, str]:
        """The partition's state and this worker's session, recovering it if needed."""
        owned = self._states.get(partition)
        if owned is not None:
            return owned
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            owned = self._states.get(partition)
            if owned is None:
                owned = self._states[partition] = await self._recover(partition)
            return owned

    def release(self, partitions: set[int]) -> None:
        """Forget partitions moved to another worker (it will claim them itself)."""
        for q in partitions:
            self._states.pop(q, None)

    async def send(self, partition: int, record: journal.Record) -> Awaitable[Any]:
        """Queue a journal record; await the result to know it is written."""
        return await self._send(self.journal_topic, journal.encode(record), partition)

    async def write(self, partition: int, record: journal.Record) -> int:
        """Write a journal record and return its offset."""
        return (await (await self.send(partition, record))).offset

    async def _recover(self, partition: int) -> tuple[PartitionState, str]:
        started = time.monotonic()
        session = uuid.uuid4().hex
        claim_offset = await self.write(partition, journal.Claim(session))
        state = PartitionState(self.spec)
        fold = journal.JournalFold(state)
        records = 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **CLIENT_DEFAULTS,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.journal_topic, partition)
            consumer.assign([tp])
            async for batch in read_until(consumer, tp, claim_offset):
                for record in batch:
                    fold.feed(journal.decode(record.value))
                records += len(batch)
        finally:
            await consumer.stop()

        if records <= 1:
            await self._rebuild_from_lake(partition, session, state)
        log.info(
            "keyed partition %d: claimed at journal offset %d after folding %d records "
            "(%d events deduplicated in memory) in %.1f s",
            partition, claim_offset, records - 1, len(state.seen), time.monotonic() - started,
        )
        return state, session

    async def _rebuild_from_lake(self, partition: int, session: str,
                                 state: PartitionState) -> None:
        snapshot = await asyncio.to_thread(
            rebuild_partition,
            LakeStore.open(self.settings.lake, self.settings),
            self.spec,
            partition,
            self.settings.partitions,
            lambda f: f.epoch != self.epoch,
            {},
        )
        if not snapshot.counters:
            return  # the lake has nothing of earlier epochs for this partition
        for record in journal.reset_records(session, snapshot)[1:]:  # our claim is written
            await self.write(partition, record)
        state.load_snapshot(snapshot)
        log.info("keyed partition %d: rebuilt from the lake of earlier broker epochs "
                 "(%d buckets, %d journeys)", partition, len(snapshot.buckets),
                 len(snapshot.journeys))
