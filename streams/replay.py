"""`pulse replay`: rebuild the rollups from the lake and publish them as the new base.

For every keyed partition, the lake's events and dead letters (every epoch; in the
current epoch only the offsets the ingest group has committed, which are exactly those
fully in the lake) are folded with the live code into a snapshot, written to the
journal as a claim and a reset. Its applied offsets are the committed ones, so workers
started afterwards carry on from there, exactly. Running it twice writes the same
snapshot twice: nothing changes.

It needs the workers stopped: a running worker would keep writing behind the reset's
claim, and readers would ignore it. Since the embedded broker cannot describe consumer
groups (TANSU, see `streams.broker`), replay refuses when the journal was written to in
the last seconds (an idle worker still journals a heartbeat every few seconds).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS, wait_for_broker
from pulse.lakefs import LakeStore, LakeStoreError
from pulse.rollups import journal
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .bootstrap import rebuild_partition, rollup_spec
from .broker import ensure_topics
from .epoch import current_epoch

QUIET_SECONDS = 15.0


async def _last_write(settings: Settings, topic: str) -> float | None:
    """Seconds since the newest record of `topic`, None if it is empty."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        newest = None
        for tp in tps:
            if ends[tp]:
                consumer.seek(tp, ends[tp] - 1)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                break
            for records in batches.values():
                for r in records:
                    newest = r.timestamp if newest is None else max(newest, r.timestamp)
        return None if newest is None else time.time() - newest / 1000
    finally:
        await consumer.stop()


async def _committed(settings: Settings, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"{settings.group}-ingest", enable_auto_commit=False,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await consumer.stop()


async def _complete_to(settings: Settings, topic: str,
                       committed: dict[int, int | None]) -> dict[int, int]:
    """Per input partition, the time (µs) up to which the lake holds what was produced.

    The lake holds exactly the committed offsets. A partition read to its end is
    complete up to the fetch that found nothing more (less the broker's fetch wait);
    one with messages past its commit only up to its last committed message's time.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        out = {}
        for p, offset in committed.items():
            tp = TopicPartition(topic, p)
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


async def replay(settings: Settings, force: bool) -> int:
    started = time.monotonic()
    await wait_for_broker(settings.kafka_bootstrap, 60, "pulse replay")
    await ensure_topics(settings)
    topics = Topics(settings.topic, settings.dlq_topic)
    if not force:
        age = await _last_write(settings, topics.rollups)
        if age is not None and age < QUIET_SECONDS:
            print(f"pulse replay: a worker wrote to {topics.rollups} {age:.0f} s ago. Stop every "
                  "worker first (replay replaces their state), or pass --force if none runs.",
                  file=sys.stderr)
            return 1
    epoch = await current_epoch(settings.kafka_bootstrap, topics)
    committed = await _committed(settings, topics.input)
    below = {(epoch, p): offset or 0 for p, offset in committed.items()}
    applied = {p: offset - 1 for p, offset in committed.items() if offset}
    complete = await _complete_to(settings, topics.input, committed)
    spec = rollup_spec(settings)
    store = LakeStore.open(settings.lake, settings)
    session = uuid.uuid4().hex
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                max_request_size=8 * 1024 * 1024, enable_idempotence=False,
                                **CLIENT_DEFAULTS)
    await producer.start()
    totals = {"read": 0, "accepted": 0, "duplicates": 0, "dead_letters": 0}
    try:
        for q in range(settings.partitions):
            snapshot = await asyncio.to_thread(rebuild_partition, store, spec, q,
                                               settings.partitions, lambda f: True, applied,
                                               below, complete)
            for record in journal.reset_records(session, snapshot):
                await producer.send_and_wait(topics.rollups, journal.encode(record), partition=q)
            for key in totals:
                totals[key] += snapshot.counters.get(key, 0)
            print(f"pulse replay: keyed partition {q + 1}/{settings.partitions}: "
                  f"{snapshot.counters.get('read', 0):,} messages, {len(snapshot.buckets):,} "
                  f"hourly buckets, {len(snapshot.journeys):,} journeys", file=sys.stderr,
                  flush=True)
    finally:
        await producer.stop()
    print(f"pulse replay: rebuilt the rollups from the lake in {time.monotonic() - started:.1f} s:"
          f" {totals['read']:,} messages = {totals['accepted']:,} events + "
          f"{totals['duplicates']:,} duplicates + {totals['dead_letters']:,} dead letters")
    return 0


def run_replay(settings: Settings, force: bool) -> int:
    try:
        LakeStore.open(settings.lake, settings).check()
    except LakeStoreError as exc:
        print(f"pulse replay: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(replay(settings, force))
