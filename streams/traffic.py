"""The traffic of `pulse simulate`: the actors' events as one seeded message stream.

`generate` is pure: it interleaves the actors of `streams.actors` in event-time order
and injects what real producers get wrong (exact duplicates, late events, invalid
messages), so tests can recompute exactly what a run sent from its seed and start.
`streams.simulate` paces that stream against the wall clock and produces it.

The stream is a sequence of slots; slot k is sent at simulated time
`start + (k + jitter) * spacing`, and nothing in it occurred after that time (invalid
future timestamps aside). The producer never sends a slot before the wall clock has
reached it, which is what keeps every `occurred_at` out of the worker's future.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import msgspec

from .actors import SECOND, Draft, TenantActor, build_world

Kind = Literal["valid", "duplicate", "invalid"]

HOUR = 3600 * SECOND
DAY = 24 * HOUR
BACKFILL_SPAN = timedelta(days=2)
"""With `--rate 0`, events are spread over this much of the recent past, ending now."""
BACKFILL_MESSAGES = 1_000_000
"""With `--rate 0` and no `--events`, the backfill is as dense as this many messages."""
MAX_START_AHEAD = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class SimOptions:
    """Everything `generate` depends on: the same options give the same bytes."""

    seed: int
    start: datetime
    """Simulated time of the first slot (UTC-aware)."""
    spacing_s: float
    """Simulated seconds between two slots: 1/rate, or the backfill span / messages."""
    tenants: int = 3
    campaigns: int = 3
    customers: int = 200
    duplicates: float = 0.02
    late: float = 0.02
    invalid: float = 0.005
    steps: tuple[str, ...] = ("picked_up", "interested", "qualified")

    @property
    def start_us(self) -> int:
        return (self.start - _EPOCH) // timedelta(microseconds=1)

    @property
    def run(self) -> str:
        """The run token in event ids: one per (seed, start)."""
        text = f"{self.seed}/{self.start_us}".encode()
        return hashlib.blake2b(text, digest_size=4).hexdigest()


@dataclass(frozen=True, slots=True)
class Simulated:
    """One message of the stream, and what it is (for pacing, the summary and tests)."""

    key: bytes
    value: bytes
    kind: Kind
    at_us: int
    """Simulated send time: the producer holds the message until the wall clock is there."""
    event_type: str | None
    late: bool = False
    flaw: str | None = None
    """How an invalid message was broken (one of `FLAWS`)."""


def plan_options(*, tenants: int, campaigns: int, customers: int, rate: float,
                 events: int | None, seed: int, start: str | datetime | None,
                 duplicates: float, late: float, invalid: float, steps: tuple[str, ...],
                 now: datetime) -> SimOptions:
    """The options of a run; raises ValueError naming the flag that is wrong.

    With a rate, simulated time moves with real time from `start` (default now). With
    `--rate 0`, the messages are spread over the last two days (from `start`, default
    two days ago), so a backfill never runs into the future.
    """
    for name, count in (("--tenants", tenants), ("--campaigns", campaigns),
                        ("--customers", customers)):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    for name, share in (("--duplicates", duplicates), ("--late", late), ("--invalid", invalid)):
        if not 0 <= share <= 1:
            raise ValueError(f"{name} is a share of events and must be in 0..1, got {share}")
    if not 0 <= rate < math.inf:
        raise ValueError(f"--rate must be a number of events per second >= 0, got {rate}")
    if events is not None and events < 1:
        raise ValueError(f"--events must be at least 1, got {events}")
    if rate:
        spacing, default_start = 1 / rate, now
    else:
        spacing = BACKFILL_SPAN.total_seconds() / (events or BACKFILL_MESSAGES)
        default_start = now - BACKFILL_SPAN
    origin = parse_start(start) if start is not None else default_start
    if origin > now + MAX_START_AHEAD:
        raise ValueError(f"--start {origin.isoformat()} is more than an hour in the future; "
                         "the worker would reject every event as a future timestamp")
    return SimOptions(seed, origin, spacing, tenants, campaigns, customers, duplicates, late,
                      invalid, steps)


def parse_start(value: str | datetime) -> datetime:
    """RFC 3339 with an offset, or a date (midnight UTC), as the API reads `from`."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"--start must be an RFC 3339 time such as 2025-03-01T09:00:00Z, "
                             f"got {value!r}") from None
        if len(value.strip()) == 10:
            parsed = parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        raise ValueError(f"--start needs a UTC offset (`Z` or `+hh:mm`), got {value!r}")
    return parsed.astimezone(UTC)


# ---- the stream ----------------------------------------------------------------------


class World:
    """The actors, and the events they have scheduled for later (intents, usage...)."""

    def __init__(self, options: SimOptions, rnd: random.Random) -> None:
        self.rnd = rnd
        self.tenants = build_world(options.tenants, options.campaigns, options.customers,
                                   options.steps, options.run, rnd)
        self.tenant_weights = list(itertools.accumulate(
            rnd.lognormvariate(0, 0.5) for _ in self.tenants))
        self.offsets = {t.tenant_id: timezone(timedelta(minutes=t.utc_offset_min))
                        for t in self.tenants}
        self.pending: list[tuple[int, int, Draft]] = []
        self.sequence = itertools.count()

    def next_event(self, now_us: int) -> Draft:
        """The earliest event due by `now_us`: a follow-up, else a new conversation now.

        Follow-ups are scheduled at or after the conversation that caused them, so the
        events come out in event-time order.
        """
        if self.pending and self.pending[0][0] <= now_us:
            return heapq.heappop(self.pending)[2]
        tenant = self._pick_tenant()
        first, *later = tenant.step(now_us, self.rnd)
        for draft in later:
            heapq.heappush(self.pending, (draft.at_us, next(self.sequence), draft))
        return first

    def _pick_tenant(self) -> TenantActor:
        weights = self.tenant_weights
        index = bisect.bisect_right(weights, self.rnd.random() * weights[-1])
        return self.tenants[min(index, len(self.tenants) - 1)]


def generate(options: SimOptions) -> Iterator[Simulated]:
    """The endless message stream of a run; the same options give the same bytes."""
    rnd = random.Random(options.seed)
    world = World(options, rnd)
    resend: list[tuple[int, int, Simulated]] = []
    start_us, spacing_us = options.start_us, options.spacing_s * SECOND
    for k in itertools.count():
        at = start_us + int((k + rnd.random()) * spacing_us)
        if rnd.random() < options.invalid:
            yield _invalid(world.next_event(at), at, world, rnd)
        elif resend and resend[0][0] <= at:
            yield replace(heapq.heappop(resend)[2], kind="duplicate", at_us=at)
        else:
            message = _valid(world.next_event(at), at, world, options.late, rnd)
            if rnd.random() < options.duplicates:
                heapq.heappush(resend, (at + _resend_delay_us(rnd), k, message))
            yield message


def _valid(draft: Draft, at_us: int, world: World, late_share: float,
           rnd: random.Random) -> Simulated:
    late = rnd.random() < late_share
    occurred_us = at_us - _lateness_us(rnd) if late else draft.at_us
    body = _body(draft, _stamp(occurred_us, world.offsets[draft.fields["tenant_id"]], rnd))
    return Simulated(draft.key.encode(), _encode(body), "valid", at_us,
                     draft.fields["event_type"], late)


def _invalid(draft: Draft, at_us: int, world: World, rnd: random.Random) -> Simulated:
    """A message the worker must dead-letter, made from an event that got broken."""
    flaw = rnd.choice(FLAWS)
    body = _body(draft, _stamp(draft.at_us, world.offsets[draft.fields["tenant_id"]], rnd))
    return Simulated(draft.key.encode(), _BREAK[flaw](body, at_us, rnd), "invalid", at_us,
                     draft.fields["event_type"], flaw=flaw)


def _broken_json(body: dict[str, Any], at_us: int, rnd: random.Random) -> bytes:
    """Cut short: no proper prefix of a JSON object is JSON."""
    raw = _encode(body)
    return raw[: rnd.randint(1, len(raw) - 1)]


def _missing_field(body: dict[str, Any], at_us: int, rnd: random.Random) -> bytes:
    required = ["id", "tenant_id", "event_type", "occurred_at"]
    required += [f for f in ("customer_id", "label", "value", "category") if f in body]
    del body[rnd.choice(required)]
    return _encode(body)


def _wrong_type(body: dict[str, Any], at_us: int, rnd: random.Random) -> bytes:
    name, wrong = rnd.choice([
        ("id", 10_000 + rnd.randrange(10**6)),
        ("occurred_at", True),
        ("tenant_id", ["acme"]),
        ("metadata", "vip caller"),
        *([("value", str(body["value"]))] if "value" in body else []),
        *([("label", {"name": body["label"]})] if "label" in body else []),
    ])
    body[name] = wrong
    return _encode(body)


def _bad_value(body: dict[str, Any], at_us: int, rnd: random.Random) -> bytes:
    if body["event_type"] in ("call_ended", "chat_ended") and rnd.random() < 0.5:
        body["value"] = -body["value"] - 1.0
    elif rnd.random() < 0.5:
        body["event_type"] = "sms_sent"
    else:
        body["tenant_id"] = body["tenant_id"] + " inc"
    return _encode(body)


def _future(body: dict[str, Any], at_us: int, rnd: random.Random) -> bytes:
    """A device clock decades ahead: in the future whatever the run's start."""
    body["occurred_at"] = rfc3339(at_us + rnd.randint(40, 60) * 365 * DAY, UTC)
    return _encode(body)


_BREAK = {"broken_json": _broken_json, "missing_field": _missing_field,
          "wrong_type": _wrong_type, "bad_value": _bad_value, "future_timestamp": _future}
FLAWS = tuple(_BREAK)


def _body(draft: Draft, occurred_at: str | int) -> dict[str, Any]:
    fields = draft.fields
    return {"id": fields["id"], "tenant_id": fields["tenant_id"],
            "event_type": fields["event_type"], "occurred_at": occurred_at, **fields}


def _stamp(occurred_us: int, offset: timezone, rnd: random.Random) -> str | int:
    """`occurred_at` to the millisecond: mostly `...Z`, some local offsets, some epoch ms."""
    roll = rnd.random()
    if roll < 0.15:
        return occurred_us // 1000
    return rfc3339(occurred_us, offset if roll < 0.3 else UTC)


def rfc3339(us: int, tz: timezone) -> str:
    moment = (_EPOCH + timedelta(milliseconds=us // 1000)).astimezone(tz)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lateness_us(rnd: random.Random) -> int:
    """Hours to days, log-uniform: most late events are hours late, some days."""
    return int(math.exp(rnd.uniform(math.log(HOUR), math.log(3 * DAY))))


def _resend_delay_us(rnd: random.Random) -> int:
    """A producer retry within a minute, or now and then a batch replayed hours later."""
    if rnd.random() < 0.75:
        return rnd.randint(SECOND // 10, 60 * SECOND)
    return rnd.randint(10 * 60 * SECOND, 6 * HOUR)
