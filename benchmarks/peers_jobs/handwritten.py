"""The hand-written peer: one aiokafka consumer, `getmany()` batches, orjson and dicts.

What a developer writes when no framework is wanted, following aiokafka's own
documentation: a group consumer subscribed to the topic with
`auto_offset_reset="earliest"` (the "Consumer client" example of the aiokafka README),
reading batches with `getmany(timeout_ms=..., max_records=...)` as its "Batch
consumption" section recommends for throughput, with the fetch sizes raised so that a
fetch carries many batches. Decoding is `orjson.loads`; the dedup set and the counters
are plain dicts in memory. It is the baseline of `pulse bench peers`: nothing is
durable, nothing survives a restart, and there is no second process; it shows the most
one Python process can do with the same messages.
"""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from . import Clock, JobArgs, fields, parse_args, write_answer

BATCH = 20_000


class StartClock(ConsumerRebalanceListener):  # type: ignore[misc]
    """The clock starts when the group has given this consumer its partitions."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            self.clock.start()


async def run(args: JobArgs) -> None:
    clock = Clock(args)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=args.group,
        auto_offset_reset="earliest", enable_auto_commit=True,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
        # A short session makes the group join quick (see FINDINGS: about half of it).
        session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
    )
    consumer.subscribe([args.topic], listener=StartClock(clock))
    await consumer.start()
    seen: set[tuple[str, str]] = set()
    campaigns: dict[tuple[str, str | None, int], int] = {}
    intents: dict[tuple[str, str, int], int] = {}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    try:
        while clock.read < args.expect:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            for records in batches.values():
                clock.tick(len(records))
                for record in records:
                    try:
                        event = fields(loads(record.value))  # type: ignore[arg-type]
                    except decode_error:
                        continue
                    if event is None:
                        continue
                    key = (event.tenant_id, event.id)
                    if key in seen:
                        continue
                    seen.add(key)
                    hour = event.occurred_ms // 3_600_000
                    bucket = (event.tenant_id, event.campaign_id, hour)
                    campaigns[bucket] = campaigns.get(bucket, 0) + 1
                    if event.label is not None:
                        intent = (event.tenant_id, event.label, hour)
                        intents[intent] = intents.get(intent, 0) + 1
        write_answer(args, clock,
                     ((t, c, h, n) for (t, c, h), n in campaigns.items()),
                     ((t, label, h, n) for (t, label, h), n in intents.items()))
    finally:
        await consumer.stop()


def main() -> None:
    asyncio.run(run(parse_args(__doc__ or "")))


if __name__ == "__main__":
    main()
