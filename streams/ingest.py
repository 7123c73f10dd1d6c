"""Stage one of the worker: read the input topic in batches and route every message.

FAUST: Faust hands agents one message at a time and tops out near 10 k events/s here
(FINDINGS), so this stage owns an aiokafka consumer and reads `getmany()` batches; it
runs in a child process of the worker (see `streams.ingest_process`) so that it has a
core of its own. Each message ends up in exactly one place:

- invalid -> the dead-letter topic (byte for byte, with reason headers) and the lake's
  `dead_letters/`, and a dead-letter note to the rollup agent so it is counted once;
- valid -> the lake's `events/`, and the rollup agent's keyed topic, each event to the
  partition of its (tenant, id) digest, as columns in a few large messages
  (`streams.keyed`: Faust's per-message cost is paid per batch, and one tenant's load
  spreads over every partition).

Each poll is decoded once, a few thousand messages at a time, straight into Arrow
columns (`schemas.chunk`): one table per input partition, from which the lake's files
and the keyed messages are both cut.

Polls are pipelined: the next poll is read while the previous one's forwards are in
flight, and a poll's rows reach the lake sink only once all its forwards and dead
letters are acknowledged, strictly in poll order. Input offsets are committed by the
lake sink, after the lake holds the rows, so a committed offset is always forwarded,
dead-lettered and durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import msgspec
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from pulse.kafka import (
    CLIENT_DEFAULTS,
    FETCH_MAX_WAIT_MS,
    MAX_MESSAGE_BYTES,
    RawRecord,
    evict_members,
)
from pulse.lakefs import LakeStore
from pulse.rollups.dedup import content_digests, id_digests
from pulse.rollups.journal import LakeMark
from pulse.schemas.chunk import decode_chunk
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from . import iceberg
from .dlq import send_dead_letter
from .keyed import PollRouter
from .lake_sink import DeadLetter, LakeSink, LakeWriter

log = logging.getLogger("pulse.ingest")
_encode = msgspec.msgpack.Encoder().encode

POLL_RECORDS = 40_000
"""Most records one poll takes: large polls make large keyed messages (see
`keyed.FORWARD_EVENTS`), which cost the rollups less per event."""
DECODE_CHUNK = 4_096
"""Records of a poll decoded into columns, and digested, at a time: fewer decoded
messages are alive at once. Measured in process on 40 k records, decoding and digests
together: 2.2 us per event in chunks of 2,048, 4,096 or 8,192 (one `Event` built per
message, as before `schemas.chunk`: 2.8-3.0 us, and 3.5 us as one chunk of 40 k)."""
POLLS_IN_FLIGHT = 2
HEARTBEAT_SECONDS = 5.0
FETCH_BYTES = 16 * 2**20
"""Most bytes one fetch brings (aiokafka buffers a fetch ahead): 80 k messages of 200
bytes, two polls' worth, so reading never waits for the broker, and memory is bounded
by bytes whatever the message size."""
COMMIT_STALL_SECONDS = 45.0
"""An offset commit that neither succeeds nor fails for this long is stuck in aiokafka
(a request that gets no answer fails after `request_timeout_ms`, 30 s): seen once in
CI after a dropped connection, when the ingest group's coordinator was marked dead and
never looked up again, so the lake stopped while the rollups went on.
The process then exits at once, as on kill -9 (its cleanup would wait on the same
client), and the worker starts it again."""
EXIT_STUCK = 75
BUFFERED_BYTES = 32 * 2**20
"""Most bytes of decoded rows the lake sink holds before reading waits: about 400 k
events, seconds of the fastest ingest, so flushes stay large."""


@dataclass
class PollPart:
    """One input partition's records of a poll, decoded: what the lake sink takes once
    the poll's forwards are acknowledged (the records themselves are not kept)."""

    expected: int
    """The offset its first record continues from."""
    offsets: list[int]
    """Every record's offset, events and dead letters, in order."""
    events: pa.Table
    dead: list[DeadLetter]


@dataclass
class Routed:
    """One poll on its way: forwards in flight, rows waiting for their acks."""

    futures: list[asyncio.Future]
    parts: dict[int, PollPart] = field(default_factory=dict)
    progress: dict[int, int] = field(default_factory=dict)
    backlog: set[int] = field(default_factory=set)
    """Input partitions whose records in this poll are part of a backlog."""
    caught_up: set[int] = field(default_factory=set)
    """Input partitions read to the end of their log by this poll."""


class Ingest:
    """Validates, dead-letters, forwards and sinks the input topic."""

    def __init__(self, settings: Settings, epoch: str) -> None:
        self.settings = settings
        self.topics = Topics.of(settings)
        self.keyed_partitions = settings.partitions
        store = LakeStore.open(settings.lake, settings)
        self.sink = LakeSink(
            LakeWriter(store, epoch, settings.topic, iceberg.committer(settings, store)),
            settings.lake_flush_rows,
            settings.lake_flush_seconds,
            commit=self._commit,
            on_mark=self._lake_mark,
            max_bytes=BUFFERED_BYTES,
        )
        self._reading: dict[int, int] = {}
        """Input partition -> the next offset this stage expects from the consumer."""
        self._catching_up: set[int] = set()
        """Input partitions being read behind the end of their log: since they were
        assigned (a restart re-reads what was not committed), or since a poll left
        records behind, until a poll reaches the end."""
        self._progress: dict[int, int] = {}
        self._lake_marks: dict[int, dict[int, LakeMark]] = defaultdict(dict)
        self._last_sent: dict[int, float] = {}
        self._in_flight: deque[Routed] = deque()
        self.counts: dict[str, int] = defaultdict(int)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = False
        self._drained = False
        self._rebalances = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and flush until `stop` is set, then drain the lake and commit."""
        await self._start()
        consume = asyncio.create_task(self._consume(), name="ingest-consume")
        flush = asyncio.create_task(self.sink.run(stopping=lambda: self._drained),
                                    name="ingest-lake")
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({consume, flush, stopped},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopped}:
                task.result()  # a crashed loop ends the process with its error
        finally:
            # Stop reading, then let the flush loop write everything read, then stop it.
            self._stopping = True
            consume.cancel()
            stopped.cancel()
            await asyncio.gather(consume, return_exceptions=True)
            await self._stop()
            self._drained = True
            await asyncio.gather(flush, return_exceptions=True)

    async def _start(self) -> None:
        common = {"bootstrap_servers": self.settings.kafka_bootstrap, **CLIENT_DEFAULTS}
        # TANSU: no idempotent producer (InitProducerId fails); exactness does not need it.
        self.producer = AIOKafkaProducer(
            acks="all", linger_ms=2, max_request_size=MAX_MESSAGE_BYTES,
            enable_idempotence=False, **common,
        )
        self.consumer = AIOKafkaConsumer(
            group_id=self.settings.ingest_group,
            client_id=self.settings.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES // 4,
            fetch_max_bytes=FETCH_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=600_000,
            **common,
        )
        await self.producer.start()
        await evict_members(self.settings.kafka_bootstrap, self.settings.ingest_group,
                            self.settings.client_id)
        await self.consumer.start()
        self.consumer.subscribe([self.topics.input], listener=_Rebalance(self))

    async def _stop(self) -> None:
        if self.consumer is not None:
            while self._in_flight:
                await self._settle()
            try:
                await asyncio.wait_for(self.sink.drain(), timeout=30)
            except TimeoutError:
                log.warning("lake flush did not finish at shutdown; the rest will be replayed")
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self._stopping:
            while self._in_flight and (len(self._in_flight) >= POLLS_IN_FLIGHT
                                       or all(f.done() for f in self._in_flight[0].futures)):
                await self._settle()
            if self.sink.pending_bytes > self.sink.max_bytes:
                await asyncio.sleep(0.05)  # the lake is behind: stop reading, keep memory bounded
                continue
            rebalances = self._rebalances
            batches = await self.consumer.getmany(timeout_ms=200, max_records=POLL_RECORDS)
            self._in_flight.append(await self._route(batches, rebalances))

    async def _route(self, batches: dict[TopicPartition, list[RawRecord]],
                     rebalances: int) -> Routed:
        """Decode one poll, dead-letter and forward it; its rows wait in the result."""
        assert self.producer is not None and self.consumer is not None
        routed = Routed([])
        taken = self._in_sequence(batches, moved=rebalances != self._rebalances)
        now_us = time.time_ns() // 1000
        router = PollRouter(self.keyed_partitions)
        for p, (expected, records) in taken.items():
            offsets = [record.offset for record in records]
            table, digests, contents, dead = await self._decode(p, records, offsets, now_us,
                                                                routed.futures)
            router.add(p, table, digests, contents, [(d.offset, d.reason) for d in dead])
            routed.parts[p] = PollPart(expected, offsets, table, dead)
            self._note_position(p, routed)
            self._progress[p] = max(self._progress.get(p, 0), records[-1].timestamp * 1000)
            self.counts["read"] += len(records)
            self.counts["dead_letters"] += len(dead)
        assigned = self.consumer.assignment()
        for p, expected in self._reading.items():
            tp = TopicPartition(self.topics.input, p)
            if p not in taken and tp in assigned and (
                    seen_us := self._caught_up_at(tp, expected)) is not None:
                self._progress[p] = max(self._progress.get(p, 0), seen_us)
                self._catching_up.discard(p)
        routed.progress = dict(self._progress)
        routed.futures.extend(await self._forward(router))
        return routed

    async def _decode(self, p: int, records: list[RawRecord], offsets: list[int],
                      now_us: int, futures: list[asyncio.Future]
                      ) -> tuple[pa.Table, bytes, list[int], list[DeadLetter]]:
        """Partition `p`'s records of a poll (at `offsets`) as (its events' table, their
        id digests, their content digests, its dead letters), `DECODE_CHUNK` records at a
        time. Each dead letter is sent to the dead-letter topic here; its ack joins
        `futures`."""
        assert self.producer is not None
        tables: list[pa.Table] = []
        digests: list[bytes] = []
        contents: list[int] = []
        dead: list[DeadLetter] = []
        for start in range(0, len(records), DECODE_CHUNK):
            part = records[start:start + DECODE_CHUNK]
            raws = [record.value or b"" for record in part]
            chunk = decode_chunk(raws, offsets[start:start + DECODE_CHUNK], p, now_us)
            for i, rejected in chunk.rejected:
                record = part[i]
                futures.append(await send_dead_letter(
                    self.producer, self.topics.dlq, self.topics.input, p, record, rejected))
                dead.append(DeadLetter(raws[i], str(rejected.reason), rejected.message,
                                       record.offset, record.timestamp * 1000))
            tables.append(chunk.table)
            digests.append(id_digests(chunk.rows))
            contents.extend(content_digests(chunk.rows))
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
        return table, b"".join(digests), contents, dead

    def _note_position(self, p: int, routed: Routed) -> None:
        """Whether the records `routed` holds of `p` are a backlog's, and whether they
        reach the end of its log (the lake sink then seals the backlog's tail)."""
        assert self.consumer is not None
        end = self.consumer.highwater(TopicPartition(self.topics.input, p))
        if end is not None and self._reading[p] < end:
            self._catching_up.add(p)
        if p in self._catching_up:
            routed.backlog.add(p)
            if end is not None and self._reading[p] >= end:
                routed.caught_up.add(p)
                self._catching_up.discard(p)

    def _caught_up_at(self, tp: TopicPartition, expected: int) -> int | None:
        """Since when (µs) `tp` is known to hold nothing past `expected`, else None.

        A poll can leave out a partition that has a backlog (it returns at most
        `POLL_RECORDS`, often from one partition only), so only a partition read up to
        the end offset of its last fetch is idle, and only since that fetch was sent:
        everything the broker had taken by then has been read. A broker holds a fetch
        for at most its max-wait, so it was sent that long (and a round trip) before
        its answer came.
        """
        assert self.consumer is not None
        end = self.consumer.highwater(tp)
        answered_ms = self.consumer.last_poll_timestamp(tp)
        if end is None or answered_ms is None or expected < end:
            return None
        return (answered_ms - FETCH_MAX_WAIT_MS) * 1000

    async def _settle(self) -> None:
        """Wait for the oldest poll's acks, then give its rows to the lake sink."""
        routed = self._in_flight.popleft()
        if routed.futures:
            await asyncio.gather(*routed.futures)
        for p, part in routed.parts.items():
            if self.sink.next_offset(p) != part.expected:
                continue  # re-opened at its committed offset meanwhile: read again
            self.sink.add_rows(p, part.offsets, part.events, part.dead,
                               backlog=p in routed.backlog)
        for p, as_of in routed.progress.items():
            self.sink.note_progress(p, as_of)
        for p in routed.caught_up:
            self.sink.caught_up(p)
        self.sink.mark_idle()

    def _in_sequence(self, batches: dict[TopicPartition, list[RawRecord]],
                     moved: bool) -> dict[int, tuple[int, list[RawRecord]]]:
        """Per partition, the records that continue exactly where this stage is reading.

        Around a rebalance a poll can return records of a partition that is no longer
        ours, or that were fetched before it was re-opened at its committed offset;
        those are skipped (the consumer is sent back to where reading continues), so
        nothing is buffered twice or skipped. `moved` says a rebalance overlapped this
        poll; otherwise a jump forward is a real gap in the log and is accepted.
        """
        assert self.consumer is not None
        taken = {}
        for tp, records in batches.items():
            expected = self._reading.get(tp.partition)
            if expected is None or not records:
                continue  # not ours (any more); whoever opens it seeks to its start
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            if moved and records[0].offset != expected:
                self.consumer.seek(tp, expected)
                continue
            self._reading[tp.partition] = records[-1].offset + 1
            taken[tp.partition] = (expected, records)
        return taken

    async def _forward(self, router: PollRouter) -> list[asyncio.Future]:
        assert self.producer is not None
        futures = []
        now = time.monotonic()
        for q in range(self.keyed_partitions):
            idle = now - self._last_sent.get(q, 0.0) >= HEARTBEAT_SECONDS
            if not router.has(q) and not idle and not self._lake_marks.get(q):
                continue
            for batch in router.messages(q, dict(self._progress), self._lake_marks.pop(q, {})):
                futures.append(await self.producer.send(
                    self.topics.keyed, _encode(batch), partition=q))
            self._last_sent[q] = now
        self.counts["forwarded_messages"] += len(futures)
        return futures

    async def _commit(self, partition: int, next_offset: int) -> bool:
        """Commit `partition` up to `next_offset`; False if it moved to another worker
        first (which reads on from the last commit and rewrites the same files)."""
        assert self.consumer is not None
        tp = TopicPartition(self.topics.input, partition)
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(self.consumer.commit({tp: next_offset}),
                                       COMMIT_STALL_SECONDS)
                return True
            except TimeoutError:
                log.error("the offset commit for partition %d has neither succeeded nor "
                          "failed in %.0f s: the Kafka client is stuck. Exiting; the worker "
                          "starts the ingest process again, which reads on from the last "
                          "commit and rewrites the same files", partition,
                          COMMIT_STALL_SECONDS)
                logging.shutdown()
                os._exit(EXIT_STUCK)
            except CommitFailedError:
                log.info("partition %d moved to another worker before its commit; it will "
                         "re-read from its last commit", partition)
                return False
            except KafkaError as exc:
                log.warning("offset commit for partition %d failed (%s); retrying", partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _lake_mark(self, partition: int, mark: LakeMark) -> None:
        for q in range(self.keyed_partitions):
            self._lake_marks[q][partition] = mark


class _Rebalance(ConsumerRebalanceListener):
    """Keeps the reading positions and the lake sink's open flushes with the assignment.

    The rebalance count moves when each callback starts and when it ends, so a poll
    that overlaps any part of a callback is recognised by `Ingest._in_sequence`.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.ingest._rebalances += 1
        for tp in revoked:
            await self.ingest.sink.revoke(tp.partition)
            self.ingest._reading.pop(tp.partition, None)
            self.ingest._progress.pop(tp.partition, None)
            self.ingest._catching_up.discard(tp.partition)
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
            self.ingest._reading[tp.partition] = position
            self.ingest._catching_up.add(tp.partition)
        self.ingest._rebalances += 1
        if assigned:
            log.info("ingest reads input partitions %s", sorted(tp.partition for tp in assigned))
