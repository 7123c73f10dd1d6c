"""The rollup agent meets gaps and repeats in the keyed offsets Faust delivers (after a
rebalance Faust's position can run ahead of the journal's, or behind it).

It fills a gap by reading the keyed topic itself and skips what it has processed. The
journal must still hold every delta in the order of its sequence number: a fold skips
a delta numbered below one it already applied (it takes it for a producer's retry), so
a delta of a group written after its gap's would be lost to every reader of the
journal and to the next claim (30 of 50 events reached the journal in the first case
below before the fix). Real broker, real `PartitionOwners` and `RollupAgent`; only
Faust's event objects are stand-ins (the agent reads their partition, offset and value).
Each partition's first delivery is its offset 0: a partition with no journal yet takes
its first message as where it starts (the keyed topic's retention may have dropped
what came before).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from pulse.checkpoint_store import rollup_spec
from pulse.lakefs import LakeStore
from pulse.rollups.columns import ColumnBatch
from pulse.rollups.local import event_batch
from pulse.streams.agents import RollupAgent
from pulse.streams.owners import PartitionOwners
from tests.deployment import Pulse, counters
from tests.streams.test_pipeline import make_stream

pytestmark = pytest.mark.broker
PARTITIONS, MESSAGES, PER_MESSAGE = 2, 5, 10
TOTAL = PARTITIONS * MESSAGES * PER_MESSAGE
Group = list[tuple[int, int]]
"""One `apply` call: (keyed partition, keyed offset) of each message Faust delivers."""

DELIVERIES: dict[str, list[Group]] = {
    "a gap after earlier messages of its partition in the group":
        [[(0, 0), (0, 1), (0, 3), (0, 4)], [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]],
    "gaps in two partitions of one group, interleaved":
        [[(0, 0), (1, 0), (0, 2), (1, 1), (1, 3), (0, 3)], [(0, 4), (1, 4)]],
    "a gap, then Faust going back over what the fill read":
        [[(0, 0), (1, 0)], [(0, 2), (0, 1), (0, 3), (1, 3)], [(1, 1), (1, 2), (0, 4), (1, 4)]],
    "a whole group behind after fills reached the end":
        [[(0, 0), (1, 0), (0, 4), (1, 4)], [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]],
}


def keyed_messages() -> dict[int, list[ColumnBatch]]:
    """Per keyed partition, `MESSAGES` batches of distinct events (source offsets rising)."""
    _, valid, _ = make_stream(seed=71, n=TOTAL * 2, now_us=time.time_ns() // 1000)
    events = list({(e.tenant_id, e.id): e for e in valid}.values())[:TOTAL]
    out: dict[int, list[ColumnBatch]] = {}
    for q in range(PARTITIONS):
        mine = events[q * MESSAGES * PER_MESSAGE:(q + 1) * MESSAGES * PER_MESSAGE]
        out[q] = [event_batch([(q, k * PER_MESSAGE + j, e) for j, e in enumerate(
            mine[k * PER_MESSAGE:(k + 1) * PER_MESSAGE])], []) for k in range(MESSAGES)]
    return out


@pytest.mark.parametrize("case", list(DELIVERIES))
def test_gaps_and_repeats_count_every_event_once_in_the_journal(pulse: Pulse, case: str):
    settings, topics = pulse.settings, pulse.topics
    pulse.ensure_topics()
    batches = keyed_messages()
    encode = msgspec.msgpack.Encoder().encode

    async def run() -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for q, messages in batches.items():  # keyed offsets 0.. of each partition
                for batch in messages:
                    await producer.send_and_wait(topics.keyed, encode(batch), partition=q)

            async def send(topic: str, value: bytes, partition: int) -> asyncio.Future[object]:
                return await producer.send(topic, value, partition=partition)

            owners = PartitionOwners(settings, rollup_spec(settings), "gaps", topics.rollups,
                                     send, LakeStore.open(settings.lake, settings))
            agent = RollupAgent(owners, topics.keyed, send, settings.partitions)
            for group in DELIVERIES[case]:
                await agent.apply([SimpleNamespace(
                    message=SimpleNamespace(partition=q, offset=k),
                    value=encode(batches[q][k])) for q, k in group])
            live: dict[str, int] = {}
            for q in batches:
                for name, n in (await owners.acquire(q)).state.counters.items():
                    live[name] = live.get(name, 0) + n
            return live
        finally:
            await producer.stop()

    everything = {"read": TOTAL, "accepted": TOTAL}
    assert asyncio.run(run()) == everything
    store = pulse.rollups(until=lambda s: counters(s).get("read", 0) >= TOTAL, timeout=30)
    assert counters(store) == everything
