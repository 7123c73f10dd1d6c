"""Dead letters to the dead-letter topic: the original bytes, with why and from where."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from pulse.kafka import RawRecord
from pulse.schemas.events import Rejected


def dead_letter_headers(topic: str, partition: int, offset: int,
                        rejected: Rejected) -> list[tuple[str, bytes]]:
    """`pulse-error-reason` and `pulse-error` (contract section 2), plus the source
    position, so a DLQ consumer can drop the copies a worker crash may re-send."""
    return [
        ("pulse-error-reason", str(rejected.reason).encode()),
        ("pulse-error", rejected.message.encode(errors="replace")),
        ("pulse-source-topic", topic.encode()),
        ("pulse-source-partition", str(partition).encode()),
        ("pulse-source-offset", str(offset).encode()),
    ]


async def send_dead_letter(producer: AIOKafkaProducer, dlq_topic: str, topic: str,
                           partition: int, record: RawRecord,
                           rejected: Rejected) -> asyncio.Future:
    """Queue the message of `topic`/`partition`, byte for byte, on the DLQ topic; await
    the result to be sure."""
    return await producer.send(
        dlq_topic,
        value=record.value,
        key=record.key,
        headers=dead_letter_headers(topic, partition, record.offset, rejected),
    )
