"""The rollup agent: one Faust agent, one journal record per keyed batch.

Faust delivers the keyed topic's messages in order per partition; each carries up to a
few thousand events (see `streams.ingest`), so Faust's per-message cost is paid per
batch. The agent takes a few messages at a time (`take_events` acks them only after
the block returns), journals them together and waits for all the acknowledgements at
once, rather than one broker round trip per message. The logic is
`PartitionState.process`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import msgspec
from aiokafka.errors import KafkaError

from pulse.rollups.partition import SourceBatch

from .owners import PartitionOwners

log = logging.getLogger("pulse.agent")

_decode = msgspec.msgpack.Decoder(SourceBatch).decode


async def apply_batch(owners: PartitionOwners, partition: int, batch: SourceBatch) -> None:
    """Process one batch and journal its delta; on a failed write, recover and retry."""
    delay = 0.5
    while True:
        state, session = await owners.acquire(partition)
        delta = state.process(batch, session)
        if delta is None:
            return
        try:
            await owners.write(partition, delta)
            return
        except KafkaError as exc:
            log.warning("journal write for keyed partition %d failed (%s); recovering the "
                        "partition and retrying in %.1f s", partition, exc, delay)
            owners.release({partition})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def apply_group(owners: PartitionOwners, events: list[Any]) -> None:
    """Process several keyed messages in order and journal them with one wait.

    If any write fails, every partition touched is recovered from its journal and its
    messages are processed again one by one (`apply_batch`); the source-offset guard
    makes that exact whether or not the first writes landed.
    """
    batches = [(event.message.partition, _decode(event.value)) for event in events]
    writes = []
    for partition, batch in batches:
        state, session = await owners.acquire(partition)
        delta = state.process(batch, session)
        if delta is not None:
            writes.append(await owners.send(partition, delta))
    try:
        await asyncio.gather(*writes)
    except KafkaError as exc:
        log.warning("journal writes failed (%s); recovering the partitions and retrying", exc)
        owners.release({partition for partition, _ in batches})
        for partition, batch in batches:
            await apply_batch(owners, partition, batch)


def register_rollup_agent(app: faust.App, topic: Any, owners: PartitionOwners) -> Any:
    @app.agent(topic, name="pulse-rollup")
    async def rollup(stream: faust.StreamT) -> None:
        async for events in stream.take_events(32, within=0.01):
            await apply_group(owners, list(events))

    return rollup
