"""The epoch: a short id for this incarnation of the Kafka log, shared by every process.

Lake file names carry partition and offsets so that a replay rewrites the same files.
Offsets alone are not unique forever: the embedded broker forgets everything when it
restarts (TANSU, see `streams.broker`), and a topic recreated on real Kafka starts at
offset 0 again. The first record of the one-partition meta topic names the epoch, and
file names start with it, so a new log can never overwrite an old one's files.
"""

from __future__ import annotations

import json
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS
from pulse.schemas.topics import Topics


async def _first_record(bootstrap: str, tp: TopicPartition, wait_ms: int) -> str | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=wait_ms, max_records=1)
        records = batch.get(tp)
        return json.loads(records[0].value)["epoch"] if records else None
    finally:
        await consumer.stop()


async def read_epoch(bootstrap: str, topics: Topics) -> str | None:
    """The epoch if a worker has named it already (API processes only read it)."""
    return await _first_record(bootstrap, TopicPartition(topics.meta, 0), wait_ms=1500)


async def current_epoch(bootstrap: str, topics: Topics) -> str:
    """The epoch of this Kafka log, creating it if this is the first process to ask."""
    tp = TopicPartition(topics.meta, 0)
    epoch = await _first_record(bootstrap, tp, wait_ms=1500)
    if epoch is not None:
        return epoch
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **CLIENT_DEFAULTS)
    await producer.start()
    try:
        # Two processes racing here both append; the first record wins for everyone.
        candidate = {"epoch": uuid.uuid4().hex[:12], "created_at": time.time()}
        await producer.send_and_wait(tp.topic, json.dumps(candidate).encode(), partition=0)
    finally:
        await producer.stop()
    epoch = await _first_record(bootstrap, tp, wait_ms=10_000)
    if epoch is None:
        raise RuntimeError(f"the epoch record written to {tp.topic} could not be read back")
    return epoch
