"""`pulse replay`: rebuild the rollups from the lake and publish them as the new base.

Every keyed partition is rebuilt from the lake's events and dead letters (every epoch;
in the current epoch only the offsets the ingest group has committed, which are exactly
those fully in the lake) with the live code (`streams.rebuild`), then published: a
reset claim in its journal, and the checkpoint stamped with that claim's offset. Its
applied offsets are the committed ones, so workers started afterwards carry on from
there, exactly. Running it twice publishes the same state twice: nothing changes.

It needs the workers stopped: a running worker would keep writing behind the reset's
claim, and readers would ignore it. Since the embedded broker cannot describe consumer
groups (TANSU, see `streams.broker`), replay refuses when the journal was written to in
the last seconds (an idle worker still journals a heartbeat every few seconds).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pulse.checkpoint_store import rollup_spec
from pulse.epoch import current_epoch
from pulse.kafka import CLIENT_DEFAULTS, wait_for_broker
from pulse.lakefs import LakeStore, LakeStoreError
from pulse.rollups import checkpoint, journal
from pulse.rollups.dedup import SeenSet
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .broker import ensure_topics
from .checkpoints import PartitionCheckpoints
from .dedup_runs import DiskRuns
from .lake_position import lake_limits
from .rebuild import rebuild

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


async def replay(settings: Settings, force: bool) -> int:
    started = time.monotonic()
    await wait_for_broker(settings.kafka_bootstrap, 60, "pulse replay")
    await ensure_topics(settings)
    topics = Topics.of(settings)
    if not force:
        age = await _last_write(settings, topics.rollups)
        if age is not None and age < QUIET_SECONDS:
            print(f"pulse replay: a worker wrote to {topics.rollups} {age:.0f} s ago. Stop every "
                  "worker first (replay replaces their state), or pass --force if none runs.",
                  file=sys.stderr)
            return 1
    epoch = await current_epoch(settings.kafka_bootstrap, topics)
    below, applied, complete = await lake_limits(settings, epoch)
    spec = rollup_spec(settings)
    lake = LakeStore.open(settings.lake, settings)
    with tempfile.TemporaryDirectory(prefix="pulse-replay-") as tmp:
        runs = {q: DiskRuns(os.path.join(tmp, f"p{q:04d}")) for q in range(settings.partitions)}
        print(f"pulse replay: reading the lake at {lake.uri('')}", file=sys.stderr, flush=True)
        states = await asyncio.to_thread(
            rebuild, lake, spec, {q: SeenSet(r) for q, r in runs.items()},
            lambda f: True, applied, below, complete)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                    enable_idempotence=False, **CLIENT_DEFAULTS)
        await producer.start()
        try:
            for q, state in sorted(states.items()):
                session = uuid.uuid4().hex
                claim = await producer.send_and_wait(
                    topics.rollups, journal.encode(journal.Claim(session, reset=True)),
                    partition=q)
                body = state.body(epoch, claim.offset, session, -1, time.time_ns() // 1000)
                checkpoints = PartitionCheckpoints(lake, epoch, q, spec.definitions())
                await asyncio.to_thread(checkpoints.publish, body, checkpoint.encode(body),
                                        runs[q])
                print(f"pulse replay: keyed partition {q + 1}/{settings.partitions}: "
                      f"{state.counters.get('read', 0):,} messages, {len(state.buckets):,} "
                      f"hourly buckets, {sum(len(g) for g in state.journeys.values()):,} "
                      "journeys", file=sys.stderr, flush=True)
        finally:
            await producer.stop()
    totals = {key: sum(s.counters.get(key, 0) for s in states.values())
              for key in ("read", "accepted", "duplicates", "dead_letters")}
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
