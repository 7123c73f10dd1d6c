"""`pulse.kafka.raw_records`, the one seam into aiokafka's internals, against the
installed aiokafka and a real broker: what `getmany()` returns under it carries every
field the ingest stage reads, equal to the `ConsumerRecord`s it replaces, and positions
move as without it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pulse.kafka import FETCH_MAX_WAIT_MS, raw_records
from tests.deployment import Pulse

pytestmark = pytest.mark.broker


async def _read(pulse: Pulse, n: int) -> tuple[list[object], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=pulse.settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await consumer.start()
    try:
        tp = TopicPartition(pulse.topics.input, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[object] = []
        while len(records) < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=7)
            records.extend(batches.get(tp, []))
        return records, await consumer.position(tp)
    finally:
        await consumer.stop()


def test_raw_records_carry_what_consumer_records_do(pulse: Pulse):
    pulse.ensure_topics()
    messages = [(f"k{i}".encode() if i % 3 else None, f'{{"n": {i}}}'.encode(), 0)
                for i in range(40)]
    pulse.produce(messages)
    plain, plain_position = asyncio.run(_read(pulse, len(messages)))
    with raw_records():
        raw, raw_position = asyncio.run(_read(pulse, len(messages)))
    again, _ = asyncio.run(_read(pulse, 1))  # the patch is gone afterwards
    assert all(type(r) is ConsumerRecord for r in plain + again)
    assert not any(type(r) is ConsumerRecord for r in raw)
    assert raw_position == plain_position == len(messages)
    fields = ("offset", "timestamp", "key", "value")
    assert ([tuple(getattr(r, f) for f in fields) for r in raw]
            == [tuple(getattr(r, f) for f in fields) for r in plain])
    assert [r.value for r in raw] == [value for _, value, _ in messages]
