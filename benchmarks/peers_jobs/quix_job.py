"""The Quix Streams peer: a `StreamingDataFrame` with a stateful filter and a window.

Written the way the Quix Streams 3 documentation builds such a job:

- `Application(broker_address=..., consumer_group=..., auto_offset_reset="earliest")`
  and `app.topic(name, value_deserializer="json", timestamp_extractor=...)`: the JSON
  deserializer is Quix's own (orjson), and the timestamp extractor makes `occurred_at`
  the event time that windows use ("Timestamps" / "Windowing" pages);
- invalid JSON: `on_consumer_error` ("triggered when internal `InternalConsumer` ...
  cannot deserialize a message"; "if the callback returns `True`, the exception will
  be ignored", `Application`'s docstring) returns True for deserialization errors of
  the input topic; other invalid events are dropped by `sdf.filter`;
- dedup: `sdf.group_by(tenant_id)` first, because state and windows are per message
  key and the docs' answer to "aggregate by a field that is not the key" is
  `group_by` (one repartition topic); then `sdf.filter(fn, stateful=True)` keeps the
  first event per id in the tenant's state (the "Stateful processing" page);
- counts: `sdf.tumbling_window(1 h, grace_ms=...).reduce(reducer, initializer)` per
  tenant, the reduced value holding both count tables of the hour ("reduce() to
  calculate multiple aggregates at once", the method's docstring), emitted with
  `.current()`; the last emitted value of each (tenant, hour) is the answer. The grace
  is the workload's disorder (seven days of event time, shuffled) plus a margin, so
  that no event is dropped as late.

Two settings are needed by the embedded broker (Tansu), and only by it:
`producer_extra_config={"enable.idempotence": False}` (Tansu fails idempotent
producers), and input topics created with `retention.ms` and `retention.bytes`, which
Quix reads back to derive its repartition and changelog topics (the harness creates
the shared input topic so).

The job stops itself with `app.stop()` once every message of the topic has been read
and every event forwarded to the repartition topic has been processed.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers.exceptions import SerializationError

from . import Clock, JobArgs, fields, parse_args, write_answer

GRACE = timedelta(days=7, hours=2)
HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000


class Job:
    def __init__(self, args: JobArgs) -> None:
        self.args = args
        self.clock = Clock(args)
        self.forwarded = 0
        self.after_hop = 0
        self.bad = 0
        self.windows: dict[tuple[str, int], dict[str, dict[str, int]]] = {}
        self.app = Application(
            broker_address=args.bootstrap, consumer_group=args.group,
            auto_offset_reset="earliest", state_dir=str(args.state_dir),
            producer_extra_config={"enable.idempotence": False},
            consumer_extra_config={"session.timeout.ms": 10_000},
            on_consumer_error=self.on_consumer_error,
            on_message_processed=self.on_message_processed,
            loglevel="WARNING",
        )
        self.input = self.app.topic(args.topic, value_deserializer="json",
                                    timestamp_extractor=_occurred_at)

    def build(self) -> None:
        sdf = self.app.dataframe(self.input)
        sdf = sdf.filter(self.valid)
        sdf = sdf.group_by(lambda value: value["tenant_id"], name="tenant")
        sdf = sdf.filter(_first_time, stateful=True)
        sdf = (sdf.tumbling_window(HOUR, grace_ms=GRACE, name="hourly")
               .reduce(_count, _first_count).current())
        sdf.update(self.remember, metadata=True)

    def valid(self, value: Any) -> bool:
        if fields(value) is None:
            return False
        self.forwarded += 1
        return True

    def remember(self, value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> None:
        self.windows[(key, value["start"] // HOUR_MS)] = value["value"]

    def on_consumer_error(self, exc: Exception, message: Any, logger: logging.Logger) -> bool:
        if isinstance(exc, SerializationError) and message is not None \
                and message.topic() == self.args.topic:
            self.bad += 1  # a message that is not JSON: skipped, as the docs show
            self.clock.tick()
            self._maybe_done()
            return True
        return False

    def on_message_processed(self, topic: str, partition: int, offset: int) -> None:
        if topic == self.args.topic:
            self.clock.tick()
        else:
            self.after_hop += 1
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.clock.read >= self.args.expect and self.after_hop >= self.forwarded:
            self.app.stop()

    def answer(self) -> None:
        campaigns: list[tuple[str, str | None, int, int]] = []
        intents: list[tuple[str, str, int, int]] = []
        for (tenant, hour), counts in self.windows.items():
            campaigns.extend((tenant, json.loads(c), hour, n) for c, n in counts["c"].items())
            intents.extend((tenant, label, hour, n) for label, n in counts["i"].items())
        write_answer(self.args, self.clock, campaigns, intents, skipped_not_json=self.bad)


def _occurred_at(value: Any, headers: Any, timestamp: int, timestamp_type: int) -> int:
    at = value.get("occurred_at") if isinstance(value, dict) else None
    return at if type(at) is int else timestamp


def _first_time(value: dict[str, Any], state: State) -> bool:
    if state.exists(value["id"]):
        return False
    state.set(value["id"], True)
    return True


def _first_count(value: dict[str, Any]) -> dict[str, dict[str, int]]:
    return _count({"c": {}, "i": {}}, value)


def _count(agg: dict[str, dict[str, int]], value: dict[str, Any]) -> dict[str, dict[str, int]]:
    # State values are JSON: a campaign of None is kept under the key "null".
    campaign = json.dumps(value.get("campaign_id"))
    agg["c"][campaign] = agg["c"].get(campaign, 0) + 1
    if value["event_type"] == "intent_detected":
        label = value["label"]
        agg["i"][label] = agg["i"].get(label, 0) + 1
    return agg


def main() -> None:
    job = Job(parse_args(__doc__ or ""))
    job.build()
    job.app.run()
    job.answer()


if __name__ == "__main__":
    main()
