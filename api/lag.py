"""Consumer lag of the workers' two groups, read every few seconds for status and metrics.

The ingest group's committed offsets move when rows are durable in the lake, so its lag
is "messages not yet in the lake"; the rollup group's is "keyed batches not yet in the
rollups". End offsets come from ListOffsets, which the embedded broker under-reports
(TANSU, see `streams.broker`): there the figures are lower bounds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pulse.kafka import CLIENT_DEFAULTS, broker_reachable
from pulse.schemas.topics import Topics
from pulse.settings import Settings

log = logging.getLogger("pulse.lag")

EVERY_SECONDS = 5.0


class LagWatch:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        topics = Topics.of(settings)
        self.groups = {"ingest": (settings.ingest_group, topics.input),
                       "rollups": (settings.group, topics.keyed)}
        self.lag: dict[str, dict[int, dict[str, int]]] = {}
        self.read_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if broker_reachable(self.settings.kafka_bootstrap):
                try:
                    for name, (group, topic) in self.groups.items():
                        self.lag[name] = await self._read(group, topic)
                    self.read_at = time.time()
                except KafkaError as exc:
                    log.debug("consumer lag not read: %s", exc)
            await asyncio.sleep(EVERY_SECONDS)

    async def _read(self, group: str, topic: str) -> dict[int, dict[str, int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    group_id=group, enable_auto_commit=False,
                                    **CLIENT_DEFAULTS)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                            or [])]
            ends = await consumer.end_offsets(tps) if tps else {}
            out = {}
            for tp in tps:
                committed = await consumer.committed(tp) or 0
                out[tp.partition] = {"end": ends[tp], "committed": committed,
                                     "lag": max(0, ends[tp] - committed)}
            return out
        finally:
            await consumer.stop()
