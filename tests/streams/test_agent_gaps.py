"""The rollup agent meets a gap in the keyed offsets Faust delivers (after a rebalance,
Faust's position can run ahead of the journal's) in the middle of a group that already
processed earlier messages of the same partition.

It fills the gap by reading the keyed topic itself. The journal must still hold every
delta in the order of its sequence number: a fold skips a delta numbered below one it
already applied (it takes it for a producer's retry), so a delta of the group written
after the gap's would be lost to every reader of the journal and to the next claim.
Real broker, real `PartitionOwners` and `RollupAgent`; only Faust's event objects are
stand-ins (the agent reads their partition, offset and value).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from pulse.checkpoint_store import rollup_spec
from pulse.lakefs import LakeStore
from pulse.rollups.local import event_batch
from pulse.streams.agents import RollupAgent
from pulse.streams.owners import PartitionOwners
from tests.deployment import Pulse, counters
from tests.streams.test_pipeline import make_stream

pytestmark = pytest.mark.broker
BATCHES, PER_BATCH = 5, 10


def test_a_gap_after_earlier_messages_of_its_partition_keeps_the_journal_in_order(
        pulse: Pulse, tmp_path: Path):
    settings, topics = pulse.settings, pulse.topics
    pulse.ensure_topics()
    _, valid, _ = make_stream(seed=71, n=BATCHES * PER_BATCH * 2, now_us=time.time_ns() // 1000)
    events = list({(e.tenant_id, e.id): e for e in valid}.values())[:BATCHES * PER_BATCH]
    batches = [event_batch([(0, i * PER_BATCH + j, e) for j, e in enumerate(
        events[i * PER_BATCH:(i + 1) * PER_BATCH])], []) for i in range(BATCHES)]
    encode = msgspec.msgpack.Encoder().encode

    async def run() -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for batch in batches:  # keyed offsets 0..4 of keyed partition 0
                await producer.send_and_wait(topics.keyed, encode(batch), partition=0)

            async def send(topic: str, value: bytes, partition: int) -> asyncio.Future[object]:
                return await producer.send(topic, value, partition=partition)

            owners = PartitionOwners(settings, rollup_spec(settings), "gaps", topics.rollups,
                                     send, LakeStore.open(settings.lake, settings))
            agent = RollupAgent(owners, topics.keyed, send, settings.partitions)
            delivered = [0, 1, 3, 4]  # offset 2 skipped, as Faust may after a rebalance
            await agent.apply([SimpleNamespace(
                message=SimpleNamespace(partition=0, offset=k), value=encode(batches[k]))
                for k in delivered])
            return dict((await owners.acquire(0)).state.counters)
        finally:
            await producer.stop()

    live = asyncio.run(run())
    assert live["read"] == live["accepted"] == BATCHES * PER_BATCH
    store = pulse.rollups(until=lambda s: counters(s).get("read", 0) >= BATCHES * PER_BATCH,
                          timeout=30)
    assert counters(store) == {"read": BATCHES * PER_BATCH, "accepted": BATCHES * PER_BATCH}
