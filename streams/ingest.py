"""Stage one of the worker: read the input topic in batches and route every message.

FAUST: Faust hands agents one message at a time and tops out near 10 k events/s here
(FINDINGS), so this stage is a service inside the Faust app that owns an aiokafka
consumer and reads `getmany()` batches. Each message ends up in exactly one place:

- invalid -> the dead-letter topic (byte for byte, with reason headers) and the lake's
  `dead_letters/`, and a dead-letter note to the rollup agent so it is counted once;
- valid -> the lake's `events/`, and the rollup agent's keyed topic, grouped by tenant
  into a few large messages (so Faust's per-message cost is paid per batch).

Input offsets are committed by the lake sink, only after the lake holds the data; the
forwards and dead letters they cover have been acknowledged before that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from pulse.kafka import CLIENT_DEFAULTS
from pulse.rollups.journal import LakeMark
from pulse.rollups.partition import SourceBatch
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.schemas.topics import Topics, tenant_partition
from pulse.settings import Settings

from .dlq import send_dead_letter
from .lake_sink import DeadLetter, LakeSink, LakeWriter

log = logging.getLogger("pulse.ingest")

POLL_RECORDS = 20_000
FORWARD_EVENTS = 2_000
FORWARD_BYTES = 512 * 1024
HEARTBEAT_SECONDS = 5.0
MAX_PENDING_ROWS_PER_PARTITION = 400_000


class Ingest(Service):
    """Validates, dead-letters, forwards and sinks the input topic."""

    def __init__(self, settings: Settings, epoch: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = Topics(settings.topic, settings.dlq_topic)
        self.keyed_partitions = settings.partitions
        self.sink = LakeSink(
            LakeWriter(settings.lake, epoch, settings.topic),
            settings.lake_flush_rows,
            settings.lake_flush_seconds,
            commit=self._commit,
            on_flushed=self._lake_flushed,
        )
        self._progress: dict[int, int] = {}
        self._lake_marks: dict[int, dict[int, LakeMark]] = defaultdict(dict)
        self._last_sent: dict[int, float] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = False
        self._rebalances = 0

    async def on_start(self) -> None:
        common = {"bootstrap_servers": self.settings.kafka_bootstrap, **CLIENT_DEFAULTS}
        # TANSU: no idempotent producer (InitProducerId fails); exactness does not need it.
        self.producer = AIOKafkaProducer(
            acks="all", linger_ms=2, max_request_size=8 * 1024 * 1024,
            enable_idempotence=False, **common,
        )
        self.consumer = AIOKafkaConsumer(
            group_id=f"{self.settings.group}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=600_000,
            **common,
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topics.input], listener=_Rebalance(self))

    async def on_stop(self) -> None:
        self._stopping = True
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.sink.drain(), timeout=30)
            except TimeoutError:
                log.warning("lake flush did not finish at shutdown; the rest will be replayed")
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    @Service.task
    async def _flush_lake(self) -> None:
        await self.sink.run(stopping=lambda: self._stopping)

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop and not self._stopping:
            if self.sink.pending_rows > MAX_PENDING_ROWS_PER_PARTITION * max(1, len(self._progress)):  # noqa: E501
                await asyncio.sleep(0.05)  # the lake is behind: stop reading, keep memory bounded
                continue
            polled_us = time.time_ns() // 1000
            rebalances = self._rebalances
            batches = await self.consumer.getmany(timeout_ms=200, max_records=POLL_RECORDS)
            await self._route(batches, polled_us, rebalances)

    async def _route(self, batches: dict[TopicPartition, list[ConsumerRecord]],
                     polled_us: int, rebalances: int) -> None:
        """Forward and dead-letter one poll, then hand its rows to the lake sink."""
        assert self.producer is not None
        taken = self._in_sequence(batches, moved=rebalances != self._rebalances)
        now_us = time.time_ns() // 1000
        outgoing: dict[int, list[tuple[int, int, Event | str]]] = defaultdict(list)
        sizes: dict[int, int] = defaultdict(int)
        pending: list[asyncio.Future] = []
        rows: dict[int, list[Event | DeadLetter]] = {}
        n = self.keyed_partitions
        for p, (_, records) in taken.items():
            out = rows[p] = []
            for record in records:
                raw = record.value or b""
                result = decode_event(raw, now_us)
                if isinstance(result, Event):
                    q = tenant_partition(result.tenant_id, n)
                    outgoing[q].append((p, record.offset, result))
                    sizes[q] += len(raw)
                    out.append(result)
                else:
                    pending.append(await send_dead_letter(
                        self.producer, self.topics.dlq, record, result))
                    outgoing[p % n].append((p, record.offset, str(result.reason)))
                    out.append(DeadLetter(raw, str(result.reason), result.message,
                                          record.offset, record.timestamp * 1000))
                    self.counts["dead_letters"] += 1
            self._progress[p] = max(self._progress.get(p, 0),
                                    max(r.timestamp for r in records) * 1000)
            self.counts["read"] += len(records)
        for p in self._assigned():
            if p not in taken:
                self._progress[p] = max(self._progress.get(p, 0), polled_us)

        pending.extend(await self._forward(outgoing, sizes))
        if pending:
            await asyncio.gather(*pending)
        # Everything above is acknowledged: only now may the lake sink (and so the
        # offset commit) take these rows, unless the partition was re-opened meanwhile.
        for p, (expected, records) in taken.items():
            if self.sink.next_offset(p) != expected:
                continue
            for record, row in zip(records, rows[p], strict=True):
                if isinstance(row, Event):
                    self.sink.add_event(p, record.offset, row)
                else:
                    self.sink.add_dead_letter(p, row)
        for p in self._assigned():
            self.sink.note_progress(p, self._progress.get(p, polled_us))

    def _in_sequence(self, batches: dict[TopicPartition, list[ConsumerRecord]],
                     moved: bool) -> dict[int, tuple[int, list[ConsumerRecord]]]:
        """Per partition, the records that continue exactly where its open flush is.

        Around a rebalance a poll can return records of a partition that is no longer
        ours, or that were fetched before it was re-opened at its committed offset;
        those are skipped (the consumer is sent back to where the flush continues), so
        nothing is buffered twice or skipped. `moved` says a rebalance overlapped this
        poll; otherwise a jump forward is a real gap in the log and is accepted.
        """
        assert self.consumer is not None
        taken = {}
        for tp, records in batches.items():
            expected = self.sink.next_offset(tp.partition)
            if expected is None or not records:
                continue  # not ours (any more); whoever opens it seeks to its start
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            if moved and records[0].offset != expected:
                self.consumer.seek(tp, expected)
                continue
            taken[tp.partition] = (expected, records)
        return taken

    async def _forward(self, outgoing: dict[int, list[tuple[int, int, Event | str]]],
                       sizes: dict[int, int]) -> list[asyncio.Future]:
        assert self.producer is not None
        futures = []
        now = time.monotonic()
        for q in range(self.keyed_partitions):
            entries = outgoing.get(q, [])
            idle = now - self._last_sent.get(q, 0.0) >= HEARTBEAT_SECONDS
            if not entries and not idle and not self._lake_marks.get(q):
                continue
            for chunk in _chunks(entries, sizes.get(q, 0)):
                batch = SourceBatch(chunk, dict(self._progress), self._lake_marks.pop(q, {}))
                futures.append(await self.producer.send(
                    self.topics.by_tenant, msgspec.msgpack.encode(batch), partition=q))
            self._last_sent[q] = now
        self.counts["forwarded_messages"] += len(futures)
        return futures

    def _assigned(self) -> list[int]:
        assert self.consumer is not None
        return [tp.partition for tp in self.consumer.assignment()]

    async def _commit(self, partition: int, next_offset: int) -> None:
        assert self.consumer is not None
        tp = TopicPartition(self.topics.input, partition)
        delay = 0.2
        while True:
            try:
                await self.consumer.commit({tp: next_offset})
                return
            except CommitFailedError:
                log.info("partition %d moved to another worker before its commit; it will "
                         "re-read from its last commit", partition)
                return
            except KafkaError as exc:
                log.warning("offset commit for partition %d failed (%s); retrying", partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _lake_flushed(self, partition: int, mark: LakeMark) -> None:
        for q in range(self.keyed_partitions):
            self._lake_marks[q][partition] = mark


def _chunks(entries: list, size: int) -> list[list]:
    """Split so that no forwarded message comes near Kafka's message size limit."""
    if not entries:
        return [[]]
    parts = max(-(-len(entries) // FORWARD_EVENTS), -(-size // FORWARD_BYTES))
    step = -(-len(entries) // parts)
    return [entries[i : i + step] for i in range(0, len(entries), step)]


class _Rebalance(ConsumerRebalanceListener):
    """Keeps the lake sink's open flushes in step with the assignment.

    The rebalance count moves when each callback starts and when it ends, so a poll
    that overlaps any part of a callback is recognised by `Ingest._route`.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.ingest._rebalances += 1
        for tp in revoked:
            await self.ingest.sink.revoke(tp.partition)
            self.ingest._progress.pop(tp.partition, None)
        self.ingest._rebalances += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.ingest._rebalances += 1
        consumer = self.ingest.consumer
        assert consumer is not None
        sink = self.ingest.sink
        starts = await consumer.beginning_offsets(list(assigned)) if assigned else {}
        for tp in assigned:
            committed = await consumer.committed(tp)
            position = committed if committed is not None else starts[tp]
            intent = await asyncio.to_thread(sink.writer.read_intent, tp.partition)
            sink.assign(tp.partition, position, intent)
            # Read from exactly where the open flush starts, whatever was prefetched.
            consumer.seek(tp, position)
        self.ingest._rebalances += 1
        if assigned:
            log.info("ingest reads input partitions %s", sorted(tp.partition for tp in assigned))
