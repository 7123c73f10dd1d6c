"""Each API process's own read copy of the rollups, tailed from the journal topic.

No API process ever asks the worker anything: any number of them, on any machine, fold
the same journal into the same `RollupStore`. A process is ready once it has read up to
where the journal ended when it started.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS, broker_reachable
from pulse.rollups import journal
from pulse.rollups.store import RollupStore
from pulse.settings import Settings

log = logging.getLogger("pulse.replica")


class JournalReplica:
    def __init__(self, settings: Settings, topic: str, store: RollupStore) -> None:
        self.settings = settings
        self.topic = topic
        self.store = store
        self.ready = False
        self.problem: str | None = "not started"
        self.records = 0
        self.last_record_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._position: dict[int, int] = {}
        """Next journal offset per partition, kept across reconnects."""

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
        for tp in tps:
            # Resume where this process got to if the broker connection was lost.
            consumer.seek(tp, self._position.get(tp.partition, 0))
        targets = await consumer.end_offsets(tps)
        self.problem = None
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for tp, records in batches.items():
                fold = self.store.fold(tp.partition)
                for record in records:
                    fold.feed(journal.decode(record.value))
                if records:
                    self._position[tp.partition] = records[-1].offset + 1
                    self.records += len(records)
                    self.last_record_at = time.time()
            if not self.ready and all(
                self._position.get(tp.partition, 0) >= targets[tp] for tp in tps
            ):
                self.ready = True
                log.info("rollup replica caught up: %d journal records folded", self.records)
