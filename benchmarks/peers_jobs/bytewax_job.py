"""The bytewax peer: a dataflow of bytewax's own operators over its Kafka source.

Written the way bytewax 0.21's documentation builds such a job:

- input: `bytewax.connectors.kafka.KafkaSource` (the connector's module docstring),
  one source partition per Kafka partition, with `tail=False` so that the dataflow
  ends when every partition reaches its end, as a bounded run should;
- decode and validate: `op.filter_map`, "a combination of map and then filter with a
  predicate removing None values", whose docstring example is exactly a `validate`
  function returning None for bad objects; decoding with `orjson`;
- dedup: `op.key_on` by (tenant_id, id), then `op.stateful_flat_map` keeping one bool
  per key and emitting the first value only (the "stateful operators" pattern);
- counts: `bytewax.operators.windowing.count_window` twice, on an `EventClock` reading
  `occurred_at` and a `TumblingWindower` of one hour aligned to the epoch (so a
  window id is the hour since the epoch), as in `count_window`'s docstring example.
  `count_window` folds with `ordered=False`, and the clock waits
  `wait_for_system_duration` = the workload's disorder (seven days of event time,
  shuffled), plus a margin, so that no event is late; windows then close at the end
  of the input and are emitted there;
- output: a `DynamicSink` collecting the window results (bytewax's custom sink API).

It runs with `bytewax.run.cli_main(flow)`, what `python -m bytewax.run` calls, with one
worker: bytewax uses one core per worker and the machine has two, shared with the
broker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, count_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

from . import Clock, Fields, JobArgs, fields, parse_args, write_answer

DISORDER = timedelta(days=7, hours=2)
"""How far out of order `occurred_at` may be: the workload's seven days, and a margin."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Message = (KafkaSourceMessage[bytes | None, bytes | None]
           | KafkaError[bytes | None, bytes | None])
Result = tuple[str, tuple[int, int]]
"""(key, (window id = hour since the epoch, count)) as `count_window` emits them."""


class _Collected(StatelessSinkPartition[Result]):
    def __init__(self, into: list[Result]) -> None:
        self.into = into

    def write_batch(self, items: list[Result]) -> None:
        self.into.extend(items)


class Collect(DynamicSink[Result]):
    """Every window result into a list of this process (one worker)."""

    def __init__(self, into: list[Result]) -> None:
        self.into = into

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Collected:
        return _Collected(self.into)


def _first_time(seen: bool | None, event: Fields) -> tuple[bool, list[Fields]]:
    return True, ([] if seen else [event])


def _occurred(event: Fields) -> datetime:
    return EPOCH + timedelta(milliseconds=event.occurred_ms)


def build(args: JobArgs, clock: Clock, campaigns: list[Result],
          intents: list[Result]) -> Dataflow:
    def decode(message: Message) -> Fields | None:
        clock.tick()
        if isinstance(message, KafkaError) or message.value is None:
            return None  # not emitted with raise_on_errors=True (the default)
        try:
            return fields(orjson.loads(message.value))
        except orjson.JSONDecodeError:
            return None

    flow = Dataflow("pulse_peers")
    messages = op.input("kafka_in", flow, KafkaSource([args.bootstrap], [args.topic],
                                                       tail=False))
    events = op.filter_map("decode", messages, decode)
    by_id = op.key_on("by_id", events, lambda e: f"{e.tenant_id}\x1f{e.id}")
    unique = op.key_rm("unkey", op.stateful_flat_map("dedup", by_id, _first_time))

    event_clock: EventClock[Fields] = EventClock(_occurred, wait_for_system_duration=DISORDER)
    hours = TumblingWindower(length=timedelta(hours=1), align_to=EPOCH)
    per_campaign = count_window("per_campaign", unique, event_clock, hours,
                                lambda e: json.dumps([e.tenant_id, e.campaign_id]))
    op.output("campaigns_out", per_campaign.down, Collect(campaigns))
    only_intents = op.filter("intents", unique, lambda e: e.label is not None)
    per_intent = count_window("per_intent", only_intents, event_clock, hours,
                              lambda e: json.dumps([e.tenant_id, e.label]))
    op.output("intents_out", per_intent.down, Collect(intents))
    return flow


def main() -> None:
    args = parse_args(__doc__ or "")
    clock = Clock(args)
    campaigns: list[Result] = []
    intents: list[Result] = []
    flow = build(args, clock, campaigns, intents)
    clock.start()  # bytewax has no group to join: its clock starts with the dataflow
    cli_main(flow, workers_per_process=1)
    write_answer(
        args, clock,
        ((*json.loads(key), hour, n) for key, (hour, n) in campaigns),
        ((*json.loads(key), hour, n) for key, (hour, n) in intents),
    )


if __name__ == "__main__":
    main()
