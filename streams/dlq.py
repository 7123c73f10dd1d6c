"""Dead letters to the dead-letter topic: the original bytes, with why and from where."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer, ConsumerRecord

from pulse.schemas.events import Rejected


def dead_letter_headers(record: ConsumerRecord, rejected: Rejected) -> list[tuple[str, bytes]]:
    """`pulse-error-reason` and `pulse-error` (contract section 2), plus the source
    position, so a DLQ consumer can drop the copies a worker crash may re-send."""
    return [
        ("pulse-error-reason", str(rejected.reason).encode()),
        ("pulse-error", rejected.message.encode(errors="replace")),
        ("pulse-source-topic", record.topic.encode()),
        ("pulse-source-partition", str(record.partition).encode()),
        ("pulse-source-offset", str(record.offset).encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer, topic: str, record: ConsumerRecord, rejected: Rejected
) -> asyncio.Future:
    """Queue the message, byte for byte, on the DLQ topic; await the result to be sure."""
    return await producer.send(
        topic,
        value=record.value,
        key=record.key,
        headers=dead_letter_headers(record, rejected),
    )
