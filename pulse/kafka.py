"""Small aiokafka helpers shared by the worker and the API (a leaf like settings).

Nothing here knows about Faust, rollups or HTTP; it only knows how to reach the
broker patiently and how to read a partition up to a known offset.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger("pulse.kafka")

CLIENT_DEFAULTS = {
    "request_timeout_ms": 30_000,
    "retry_backoff_ms": 200,
    "metadata_max_age_ms": 30_000,
}

MAX_MESSAGE_BYTES = 8 * 2**20
"""The largest message Pulse writes to the topics it keeps for itself (a keyed batch, a
journal delta): its producers' `max_request_size`, and those topics'
`max.message.bytes`. A batch of ordinary events is far smaller (about 800 KB for
`FORWARD_EVENTS`); the room is for events whose ids and labels are long."""

FETCH_MAX_WAIT_MS = 50
"""Every Pulse consumer's fetch max-wait.

TANSU: the embedded broker holds a fetch for its whole max-wait even when data arrives
meanwhile (measured: a message waits ~max-wait, 500 ms by aiokafka's default, 1.5 s by
Faust's), and the pipeline has three hops. On Apache Kafka, which answers as soon as
data arrives, 50 ms only means more fetch requests while a partition is idle.
"""


class BrokerUnavailable(Exception):
    """The broker named by PULSE_KAFKA_BOOTSTRAP did not answer in time."""


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


async def wait_for_broker(bootstrap: str, timeout: float, what: str) -> None:
    """Wait until the broker answers a metadata request, saying so every few seconds.

    A worker or API started before its broker waits instead of failing, which is what
    `docker compose up` and process supervisors need.
    """
    deadline = time.monotonic() + timeout
    said = 0.0
    while True:
        if broker_reachable(bootstrap):
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **CLIENT_DEFAULTS)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except KafkaError:
                pass
            finally:
                await admin.close()
        now = time.monotonic()
        if now >= deadline:
            raise BrokerUnavailable(
                f"{what}: no Kafka broker answered at {bootstrap} within {timeout:.0f} s. "
                "Start one with `pulse broker`, or set PULSE_KAFKA_BOOTSTRAP to yours."
            )
        if now - said >= 5:
            log.warning("%s: waiting for Kafka at %s (PULSE_KAFKA_BOOTSTRAP)...", what, bootstrap)
            said = now
        await asyncio.sleep(0.5)


EVICT_SECONDS = 10.0
"""Longest `evict_members` may take; past it the consumer joins as it would without it."""


async def evict_members(bootstrap: str, group: str, client_id: str) -> int:
    """Remove from `group` the members named after `client_id`; returns how many.

    Called by a worker's consumer just before it joins: such members are what an
    earlier run of the same worker left when it was killed. The broker keeps a member
    that stopped without leaving until its session times out, and a rebalance waits
    for it; LeaveGroup on the dead member's behalf ends that wait. Measured on the
    embedded broker with 6 s sessions: a consumer joining after a killed one got its
    partitions 11.2 s after the kill, 3.1 s with this; `pulse bench recovery` at 2 M
    events, a worker whole again 13.1 s after kill -9 before, 5.6 s with this. Were
    the member alive after all (a stalled process of the same worker), it is told at
    its next heartbeat and joins again; Pulse's answers never depend on who holds a
    partition when.

    Only a settled group whose members are all this worker's is touched: a lone
    worker's restart, the common case. TANSU: evictions from groups that other workers
    were in, as they rebalanced, left the embedded broker sending the members from join
    to join without ever completing a generation (twice in the suite: the crash storm
    and two workers killed in turn); with other workers the join waits for the dead
    member's session, as before. Also TANSU: DescribeGroups leaves each member's client
    id empty, so members are matched by the id the broker gave them (Apache Kafka also
    names them `<client id>-<uuid>`).

    Best effort: on any broker error the join just waits, as it would without this.
    """
    prefix = f"{client_id}-"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **CLIENT_DEFAULTS)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, **CLIENT_DEFAULTS)
    try:
        async with asyncio.timeout(EVICT_SECONDS):
            await admin.start()
            described = await admin.describe_consumer_groups([group])
            stale = [member[0] for response in described for entry in response.groups
                     if entry[2] == "Stable" and all(m[0].startswith(prefix) for m in entry[5])
                     for member in entry[5]]
            if not stale:
                return 0
            await client.bootstrap()
            coordinator = await client.coordinator_lookup(CoordinationType.GROUP, group)
            removed = [member_id for member_id in stale if (await client.send(
                coordinator, LeaveGroupRequest(group, member_id))).error_code == 0]
            log.info("group %s: removed %d member(s) an earlier run of this worker left "
                     "(%s)", group, len(removed), ", ".join(removed))
            return len(removed)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.info("group %s: could not look for members an earlier run left (%r); joining "
                 "waits for their sessions to end", group, exc)
        return 0
    finally:
        await admin.close()
        await client.close()


async def read_until(
    consumer: AIOKafkaConsumer, tp: TopicPartition, last_offset: int, start: int = 0
) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of `tp` from `start` through `last_offset`, in batches.

    The caller knows `last_offset` because it wrote that record itself; end offsets
    from ListOffsets are not trusted (the embedded broker under-reports them).
    """
    consumer.seek(tp, start)
    position = start
    while position <= last_offset:
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
        records = [r for r in batches.get(tp, []) if r.offset <= last_offset]
        if records:
            position = records[-1].offset + 1
            yield records
        elif batches.get(tp):
            return


async def log_start(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """The first offset `tp` still holds (retention moves it on)."""
    starts: dict[TopicPartition, int] = await consumer.beginning_offsets([tp])
    return starts[tp]


async def record_at(consumer: AIOKafkaConsumer, tp: TopicPartition,
                    offset: int) -> ConsumerRecord | None:
    """The record at `offset` of `tp` (assigned to `consumer`), or None if it is not there."""
    consumer.seek(tp, offset)
    batch = await consumer.getmany(tp, timeout_ms=2000, max_records=1)
    records = batch.get(tp, [])
    return records[0] if records and records[0].offset == offset else None


class RawRecord(Protocol):
    """What `raw_records` makes `getmany()` return for each message: aiokafka's own
    record object, which has these and no topic or partition (the caller knows them)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


_PROBED_SIGNATURE = "(self, tp, record)"


@contextmanager
def raw_records() -> Iterator[None]:
    """Within it, every consumer of this process returns aiokafka's record objects from
    `getmany()` instead of one `ConsumerRecord` per message (`RawRecord`).

    AIOKAFKA: the one seam into its internals. Its fetcher unpacks each record batch
    in C, then calls `PartitionRecords._consumer_record(tp, record)` to copy every record
    into a `ConsumerRecord` dataclass: about a fifth of the ingest process's CPU at a
    few hundred thousand messages a second, for fields the ingest stage never reads.
    Positions, commits and rebalances do not look at the returned objects.
    `tests/test_kafka_seam.py` checks this against the installed aiokafka, and this
    refuses to patch a method whose signature has changed.
    """
    from aiokafka.consumer import fetcher

    records: Any = fetcher.PartitionRecords
    original = records._consumer_record
    if str(inspect.signature(original)) != _PROBED_SIGNATURE:
        raise RuntimeError(
            "aiokafka's PartitionRecords._consumer_record changed "
            f"({inspect.signature(original)}); pulse.kafka.raw_records needs a look")
    records._consumer_record = _the_record
    try:
        yield
    finally:
        records._consumer_record = original


def _the_record(self: object, tp: TopicPartition, record: Any) -> Any:
    return record
