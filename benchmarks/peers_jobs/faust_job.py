"""The Faust peer: a parsing agent, a repartition topic, and a counting agent with tables.

Written the way the Faust documentation (faust-streaming 0.15) builds such a job:

- models: `class Event(faust.Record, serializer="json")` ("Models, Serialization, and
  Codecs"). The input topic is read as raw bytes and decoded with `Event.loads` in the
  first agent, because a value that fails to deserialize in a typed stream crashes the
  agent (seen here: `ValueDecodeError` ends the `async for`) instead of skipping it;
- repartition: tables are sharded like the stream that writes them, and a table may
  only be written from the partition that owns its keys, so the "Tables and Windowing"
  chapter re-keys the stream by the table key first. The parsing agent sends each valid
  event to a topic keyed by tenant (what `stream.group_by` does with `event.forward`);
  every table key starts with the tenant, so this one hop serves all three tables;
- dedup: a `seen` table (`app.Table("seen", default=bool)`), one entry per (tenant, id);
- counts: two tables `.tumbling(3600, expires=...)` made time-relative to the event's
  `occurred_at` with `.relative_to(...)` (`relative_to_field` wants seconds and
  `occurred_at` is in milliseconds), incremented with `+= 1` as in the windowing
  examples. `expires` is longer than the workload's seven days of disorder, so no
  window is dropped while it still receives events;
- tables in memory (`store="memory://"`), changelogs on, `processing_guarantee`
  at_least_once (exactly_once needs transactions, which the embedded broker lacks).

The embedded broker (Tansu) gives implicitly created topics 4 partitions and Faust
then loops on `PartitionsMismatch`, so the job creates the topics Faust will use (the
repartition topic, the changelogs, the assignor's leader topic) itself, with the
counts it declares. Once every message of the input has been read and every event
sent on has been counted, the job writes its answer and ends its own process.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from typing import Any, cast

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.tables.wrappers import WindowWrapper
from faust.types import EventT, TableT

from . import Clock, JobArgs, fields, parse_args, write_answer

PARTITIONS = 8
HOUR_S = 3600
EXPIRES = timedelta(days=8)
TABLES = ("seen", "campaign_hours", "intent_hours")


class Event(faust.Record, serializer="json"):
    id: str
    tenant_id: str
    event_type: str
    occurred_at: int
    campaign_id: str | None = None
    label: str | None = None


def _occurred_s(event: EventT | None) -> float:
    assert event is not None, "windowed tables are only written while iterating a stream"
    return float(cast(Event, event.value).occurred_at) / 1000.0


async def create_topics(args: JobArgs) -> None:
    names = [f"{args.group}-by-tenant"] + [f"{args.group}-{t}-changelog" for t in TABLES]
    topics = [NewTopic(name, PARTITIONS, 1) for name in names]
    topics.append(NewTopic(f"{args.group}-__assignor-__leader", 1, 1))
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(topics)
    finally:
        await admin.close()


def hourly(table: TableT[Any, Any]) -> WindowWrapper:
    """Tumbling hours of event time; `relative_to_field` would read milliseconds as seconds."""
    windows = cast(WindowWrapper, table.tumbling(HOUR_S, expires=EXPIRES))
    return cast(WindowWrapper, windows.relative_to(_occurred_s))


def build(args: JobArgs) -> faust.App:
    clock = Clock(args)
    app = faust.App(
        args.group, broker=f"kafka://{args.bootstrap}", store="memory://",
        datadir=str(args.state_dir), topic_partitions=PARTITIONS,
        broker_session_timeout=10, consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    raw = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    by_tenant = app.topic(f"{args.group}-by-tenant", key_type=str, value_type=Event,
                          partitions=PARTITIONS)
    seen = app.Table("seen", default=bool, partitions=PARTITIONS)
    campaign_hours = hourly(app.Table("campaign_hours", default=int, partitions=PARTITIONS))
    intent_hours = hourly(app.Table("intent_hours", default=int, partitions=PARTITIONS))
    state = {"forwarded": 0, "processed": 0}

    def finish() -> None:
        campaigns = [(key[0], key[1], int(start // HOUR_S), n)
                     for (key, (start, _)), n in campaign_hours.table.data.items()]
        intents = [(key[0], key[1], int(start // HOUR_S), n)
                   for (key, (start, _)), n in intent_hours.table.data.items()]
        write_answer(args, clock, campaigns, intents)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # the answer is written; a worker's graceful stop is not measured

    def done() -> bool:
        return clock.read >= args.expect and state["processed"] >= state["forwarded"]

    @app.agent(raw)
    async def parse(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            clock.tick()
            try:
                event = Event.loads(value)
            except Exception:  # not JSON, or not an object with the fields: skipped
                event = None
            if event is not None and fields(event.asdict()) is not None:
                state["forwarded"] += 1
                await by_tenant.send(key=event.tenant_id, value=event)
            elif done():
                finish()

    @app.agent(by_tenant)
    async def count(stream: faust.StreamT[Event]) -> None:
        async for event in stream:
            state["processed"] += 1
            key = (event.tenant_id, event.id)
            if not seen[key]:
                seen[key] = True
                campaign_hours[(event.tenant_id, event.campaign_id)] += 1
                if event.event_type == "intent_detected":
                    intent_hours[(event.tenant_id, event.label)] += 1
            if done():
                finish()

    return app


def main() -> None:
    args = parse_args(__doc__ or "")
    asyncio.run(create_topics(args))
    app = build(args)
    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
