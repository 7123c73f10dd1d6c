"""The rollup agent: one Faust agent, one keyed batch at a time, one journal record each.

Faust delivers the keyed topic's messages in order per partition; each carries up to a
few thousand events (see `streams.ingest`), so Faust's per-message cost is paid per
batch. The agent stays thin: the logic is `PartitionState.process`.
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


def register_rollup_agent(app: faust.App, topic: Any, owners: PartitionOwners) -> Any:
    @app.agent(topic, name="pulse-rollup")
    async def rollup(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await apply_batch(owners, event.message.partition, _decode(event.value))

    return rollup
