"""The rollup agent: one Faust agent, one journal record per keyed message.

Faust delivers the keyed topic's messages in order per partition; each carries up to a
few thousand events (see `streams.ingest`) or the funnel steps another partition counted
for journeys kept here, so Faust's per-message cost is paid per batch. The agent takes a
few messages at a time (`take_events` acks them only after the block returns) and, for
each group, in this order:

1. processes every message (`PartitionState.process`), in keyed-offset order;
2. sends the funnel steps the group counted to the partitions of their journeys, one
   message per partition (`JourneySteps`; with a heartbeat to every partition now and
   then, so their `as_of` moves), and waits for every acknowledgement;
3. writes each message's delta to the journal and waits for every acknowledgement,
   checking that this worker's writes follow one another (`PartitionOwners.confirm`);
4. publishes the checkpoints that are due.

A message beyond the next keyed offset (Faust's position can run ahead of the journal's
after a rebalance) is a gap: the agent reads the missing messages from the keyed topic
itself, after steps 2-4 for what the group processed before it, so that every delta
lands in the journal in the order of its sequence number (a fold takes a lower number
for a producer's retry and skips it).

A crash between 2 and 3 sends the same steps again when the message is processed again:
a journey takes a step it already has without change. A failed write recovers every
partition touched and processes its messages again one by one; the keyed-offset guard
makes that exact whether or not the first writes landed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS, log_start, read_until
from pulse.rollups.partition import (
    JourneySteps,
    KeyedGap,
    KeyedMessage,
    Outcome,
    StepBatch,
    merge_steps,
)

from .owners import PartitionOwners

log = logging.getLogger("pulse.agent")

HEARTBEAT_SECONDS = 5.0
_decode = msgspec.msgpack.Decoder(KeyedMessage).decode
_encode = msgspec.msgpack.Encoder().encode

Message = tuple[int, int, KeyedMessage]
"""(keyed partition, keyed offset, message)."""


class RollupAgent:
    def __init__(self, owners: PartitionOwners, keyed_topic: str, send: Any,
                 partitions: int) -> None:
        self.owners = owners
        self.keyed_topic = keyed_topic
        self._send = send
        self.partitions = partitions
        self._heartbeat_at: dict[int, float] = {}

    async def apply(self, events: list[Any]) -> None:
        messages = [(e.message.partition, e.message.offset, _decode(e.value)) for e in events]
        try:
            await self._apply_group(messages)
        except KafkaError as exc:
            log.warning("journal or step writes failed (%s); recovering the partitions and "
                        "retrying", exc)
            self.owners.release({q for q, _, _ in messages})
            for message in messages:
                await self._apply_one(message)

    async def _apply_group(self, messages: list[Message]) -> None:
        outcomes: list[tuple[int, Outcome]] = []
        for q, offset, message in messages:
            owned = await self.owners.acquire(q)
            try:
                outcome = owned.state.process(message, offset, owned.session)
            except KeyedGap as gap:
                # What the group processed so far is journaled before the gap's messages
                # are: a journal's deltas must stand in the order of their sequence
                # numbers, as a fold takes a delta numbered below the last one applied
                # for a producer's retry and skips it.
                await self._write(outcomes)
                outcomes = []
                await self._fill_gap(q, owned.state.keyed_next, offset, str(gap))
                owned = await self.owners.acquire(q)
                outcome = owned.state.process(message, offset, owned.session)
            outcomes.append((q, outcome))
        await self._write(outcomes)

    async def _write(self, outcomes: list[tuple[int, Outcome]]) -> None:
        """Steps 2-4 for messages processed (step 1) in this order."""
        if not outcomes:
            return
        # Step 2: the steps, acknowledged before any delta that counted them is written.
        await asyncio.gather(*[await self._send(self.keyed_topic, _encode(batch), j)
                               for j, batch in self._forwards(outcomes)])
        # Step 3: the deltas, checked to follow this worker's earlier writes.
        writes = [(q, outcome.delta, await self.owners.send(q, outcome.delta))
                  for q, outcome in outcomes if outcome.delta is not None]
        acks = await asyncio.gather(*[future for _, _, future in writes])
        for (q, delta, _), ack in zip(writes, acks, strict=True):
            self.owners.confirm(q, delta.session, ack.offset, delta.seq)
        # Step 4: checkpoints, of states now equal to the journal.
        for q in {q for q, _ in outcomes}:
            self.owners.maybe_checkpoint(q)

    async def _apply_one(self, message: Message) -> None:
        """Process one message and journal it; on a failed write, recover and retry."""
        delay = 0.5
        while True:
            try:
                await self._apply_group([message])
                return
            except KafkaError as exc:
                log.warning("journal write for keyed partition %d failed (%s); recovering "
                            "it and retrying in %.1f s", message[0], exc, delay)
                self.owners.release({message[0]})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _fill_gap(self, q: int, first: int, offset: int, why: str) -> None:
        """Process keyed messages `first`..`offset - 1`, which this partition's journal
        does not hold (this worker read them while another owned the partition, or
        Faust's position jumped); if the keyed topic no longer holds them, the partition
        is rebuilt from the lake."""
        tp = TopicPartition(self.keyed_topic, q)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.owners.settings.kafka_bootstrap,
                                    enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    max_partition_fetch_bytes=32 * 1024 * 1024, **CLIENT_DEFAULTS)
        await consumer.start()
        try:
            consumer.assign([tp])
            if await log_start(consumer, tp) > first:
                await self.owners.rebuild(q, f"{why}, and the keyed topic no longer holds "
                                             "them (PULSE_JOURNAL_RETENTION_HOURS)")
                return
            log.info("keyed partition %d: reading keyed offsets %d..%d again (%s)",
                     q, first, offset - 1, why)
            async for records in read_until(consumer, tp, offset - 1, start=first):
                for record in records:
                    await self._apply_one((q, record.offset, _decode(record.value)))
        finally:
            await consumer.stop()

    def _forwards(self, outcomes: list[tuple[int, Outcome]]) -> list[tuple[int, JourneySteps]]:
        """The steps a group counted, plus a heartbeat to every partition from each
        partition that has not sent one for `HEARTBEAT_SECONDS`: one message per
        destination (a message per processed message and destination cost the embedded
        broker a core at 5 k events/s)."""
        out = [(j, batch) for _, outcome in outcomes for j, batch in outcome.forwards.items()]
        now = time.monotonic()
        for q in {q for q, _ in outcomes}:
            if now - self._heartbeat_at.get(q, 0.0) < HEARTBEAT_SECONDS:
                continue
            state = self.owners.owned().get(q)
            if state is None:
                continue
            self._heartbeat_at[q] = now
            out.extend((j, StepBatch(q, state.as_of(), [])) for j in range(self.partitions))
        return list(merge_steps(out).items())


def register_rollup_agent(app: faust.App, topic: Any, agent: RollupAgent) -> Any:
    @app.agent(topic, name="pulse-rollup")
    async def rollup(stream: faust.StreamT) -> None:
        async for events in stream.take_events(32, within=0.01):
            await agent.apply(list(events))

    return rollup
