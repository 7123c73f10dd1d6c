"""How far the lake holds each input partition: the ingest group's commits, and when.

The ingest stage commits an input offset only once everything before it is durable in
the lake, so the committed offsets say exactly which messages the lake holds. Replays
and rebuilds take the lake up to them, and stamp what they build with the time it is
complete up to.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS
from pulse.settings import Settings


async def committed_offsets(settings: Settings) -> dict[int, int | None]:
    """Input partition -> the ingest group's committed offset (None: nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.ingest_group, enable_auto_commit=False,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(settings.topic) or [])
        return {p: await consumer.committed(TopicPartition(settings.topic, p))
                for p in partitions}
    finally:
        await consumer.stop()


async def complete_to(settings: Settings, committed: dict[int, int | None]) -> dict[int, int]:
    """Per input partition, the time (µs) up to which the lake holds what was produced.

    A partition read to its end is complete up to the fetch that found nothing more
    (less the broker's fetch wait); one with messages past its commit only up to its
    last committed message's time.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        out = {}
        for p, offset in committed.items():
            tp = TopicPartition(settings.topic, p)
            consumer.assign([tp])
            asked_us = time.time_ns() // 1000 - FETCH_MAX_WAIT_MS * 1000
            consumer.seek(tp, offset or 0)
            after = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp)
            if not after:
                out[p] = asked_us
            elif offset:
                consumer.seek(tp, offset - 1)
                last = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp)
                if last:
                    out[p] = last[0].timestamp * 1000
        return out
    finally:
        await consumer.stop()


async def lake_limits(settings: Settings, epoch: str
                      ) -> tuple[dict[tuple[str, int], int], dict[int, int], dict[int, int]]:
    """(`below`, `applied`, `complete`) for a rebuild of the lake up to the commits."""
    committed = await committed_offsets(settings)
    below = {(epoch, p): offset or 0 for p, offset in committed.items()}
    applied = {p: offset - 1 for p, offset in committed.items() if offset}
    return below, applied, await complete_to(settings, committed)
