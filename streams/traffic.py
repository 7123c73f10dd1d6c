"""The traffic of `pulse simulate`: the actors' events as one seeded message stream.

`generate` is pure: it runs the actors of `streams.actors` in event-time order and
injects what real producers get wrong (exact duplicates, late events, invalid
messages), so tests can recompute exactly what a run sent from its seed and start.
`streams.simulate` paces that stream against the wall clock and produces it.

The stream is a sequence of slots, each sent at a simulated time (`SlotClock`): first a
history, slots spread over its span as densely as the world is busy (more at the hours
people answer, fewer at night and at weekends), then live slots at `rate` per second,
or, with rate 0, at the history's own pace. Nothing in a slot occurred after its send
time (invalid future timestamps aside), and the producer never sends a slot before the
wall clock has reached it, which keeps every `occurred_at` out of the worker's future.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

import msgspec

from .actors import Draft, Item, Touch
from .rhythm import DAY, HOUR, SECOND
from .tenants import TenantActor, build_world

Kind = Literal["valid", "duplicate", "invalid"]

MESSAGES_PER_CUSTOMER_DAY = 3.3
"""The history's density: messages a day per customer a tenant works at a time."""
RATE_0_BACKFILL_DAYS = 2.0
"""`--rate 0` without `--backfill-days`: how far back the backfill starts."""
MAX_BACKFILL_DAYS = 365.0
MAX_START_AHEAD = timedelta(hours=1)
COMPACT_AT = 50_000
"""Scheduled items at which `World` first drops the cancelled ones."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
_DATES: dict[int, str] = {}
"""`YYYY-MM-DDT` of each day a stamp fell on (days since the epoch)."""


@dataclass(frozen=True)
class SimOptions:
    """Everything `generate` depends on: the same options give the same bytes."""

    seed: int
    start: datetime
    """Simulated time of the first slot (UTC-aware): where the history starts."""
    history_s: float
    """Seconds of history before the live slots; 0 for none."""
    history_messages: int
    """Slots spread over the history."""
    rate: float
    """Live slots per second; 0 keeps the history's pace."""
    tenants: int = 3
    campaigns: int = 3
    customers: int = 1000
    duplicates: float = 0.02
    late: float = 0.02
    invalid: float = 0.005
    steps: tuple[str, ...] = ("picked_up", "interested", "qualified")

    @property
    def start_us(self) -> int:
        return (self.start - _EPOCH) // timedelta(microseconds=1)

    @property
    def daily_messages(self) -> float:
        """The world's own pace: messages a day, as dense as a history would be."""
        return MESSAGES_PER_CUSTOMER_DAY * self.customers * self.tenants

    @property
    def live_start_us(self) -> int:
        """Where the history ends and the live slots begin."""
        return self.start_us + round(self.history_s * SECOND)

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
                 now: datetime, backfill_days: float | None = None) -> SimOptions:
    """The options of a run; raises ValueError naming the flag that is wrong.

    The history covers `backfill_days` from `start` (default: that many days ago), as
    densely as `MESSAGES_PER_CUSTOMER_DAY`; with `--rate 0` and `--events`, those
    events make up the whole history instead (a load run that stays in the past).
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
    days = (RATE_0_BACKFILL_DAYS if rate == 0 else 0.0) if backfill_days is None else backfill_days
    if not 0 <= days <= MAX_BACKFILL_DAYS:
        raise ValueError(f"--backfill-days must be in 0..{MAX_BACKFILL_DAYS:g}, got {days}")
    span = timedelta(days=days)
    if not days:
        messages = 0
    elif rate == 0 and events:
        messages = events
    else:
        messages = max(1, round(days * MESSAGES_PER_CUSTOMER_DAY * customers * tenants))
    origin = parse_start(start) if start is not None else now - span
    if origin > now + MAX_START_AHEAD:
        raise ValueError(f"--start {origin.isoformat()} is more than an hour in the future; "
                         "the worker would reject every event as a future timestamp")
    return SimOptions(seed, origin, span.total_seconds(), messages, rate, tenants, campaigns,
                      customers, duplicates, late, invalid, steps)


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
    """The actors, and what they have scheduled: follow-up events and later touches."""

    def __init__(self, options: SimOptions, rnd: random.Random) -> None:
        self.rnd = rnd
        history = (options.start_us, options.live_start_us - options.start_us)
        self.tenants = build_world(options.tenants, options.campaigns, options.customers,
                                   options.steps, options.run, history, rnd)
        self.tenant_weights = [rnd.uniform(0.5, 1.5) for _ in self.tenants]
        """How big each tenant is: its share of the conversations, at most 3 to 1."""
        self.zones: dict[str, tzinfo] = {t.tenant_id: t.calendar.zone for t in self.tenants}
        self.pending: list[tuple[int, int, Item]] = []
        self.sequence = itertools.count()
        self._compact_at = COMPACT_AT
        self._hours: dict[int, list[float]] = {}

    def intensity(self, at_us: int) -> float:
        """How busy the whole world is at `at_us` (relative; the history's density)."""
        return self._hour(at_us)[-1]

    def next_event(self, now_us: int) -> Draft:
        """The earliest event due by `now_us`: a follow-up, else a conversation now.

        Everything an actor schedules lies at or after the moment it was decided, so the
        events come out in event-time order.
        """
        pending, rnd = self.pending, self.rnd
        while True:
            if pending and pending[0][0] <= now_us:
                item = heapq.heappop(pending)[2]
                if isinstance(item, Draft):
                    return item
                self._schedule(item.customer.tenant.run(item, rnd))
            else:
                self._schedule(self._pick_tenant(now_us).new_activity(now_us, rnd))

    def _schedule(self, items: list[Item]) -> None:
        for item in items:
            heapq.heappush(self.pending, (item.at_us, next(self.sequence), item))
        if len(self.pending) > self._compact_at:
            self._compact()

    def _compact(self) -> None:
        """Drop cancelled touches (a customer who got in touch early leaves one behind,
        due hours to days later): live at 200 messages/s they grew by ~50 a second.
        The order of what is left does not change, so neither does the stream."""
        self.pending[:] = [e for e in self.pending
                           if not (isinstance(e[2], Touch) and e[2].cancelled)]
        heapq.heapify(self.pending)  # in place: `next_event` holds on to the list
        self._compact_at = max(COMPACT_AT, 2 * len(self.pending))

    def _pick_tenant(self, now_us: int) -> TenantActor:
        """A tenant, as busy as its local hour makes it: tenants live in other zones."""
        weights = self._hour(now_us)
        index = bisect.bisect_right(weights, self.rnd.random() * weights[-1])
        return self.tenants[min(index, len(self.tenants) - 1)]

    def _hour(self, at_us: int) -> list[float]:
        hour = at_us // HOUR
        found = self._hours.get(hour)
        if found is None:
            found = self._hours[hour] = list(itertools.accumulate(
                w * t.intensity(at_us) for w, t in zip(self.tenant_weights, self.tenants,
                                                      strict=True)))
        return found


class SlotClock:
    """The send time of each slot: the history as dense as the world is busy, then live.

    Slot k of the history sits where the world's cumulative busyness since `start`
    reaches (k + jitter) shares of it, hour by hour; with rate 0 the live slots go on
    the same way, else they are 1/rate seconds apart from the history's end.
    """

    def __init__(self, options: SimOptions, intensity: Callable[[int], float]) -> None:
        self.intensity = intensity
        self.history = options.history_messages
        self.rate = options.rate
        self.live_start = options.live_start_us
        self.cursor = options.start_us
        self.cursor_mass = 0.0
        """The busyness accumulated from `start` to `cursor`, a point at or before the
        last slot handed out."""
        if self.history:
            self.per_slot = self._mass(options.start_us, self.live_start) / self.history
        else:  # no history to take the pace from: the world's own, over a week
            week = 7 * DAY
            self.per_slot = self._mass(self.live_start, self.live_start + week) / (
                7 * options.daily_messages)

    def at(self, k: int, jitter: float) -> int:
        if k >= self.history and self.rate:
            return self.live_start + int((k - self.history + jitter) * SECOND / self.rate)
        target = (k + jitter) * self.per_slot
        while True:
            density = self.intensity(self.cursor)
            hour_end = (self.cursor // HOUR + 1) * HOUR
            mass = density * (hour_end - self.cursor)
            if self.cursor_mass + mass >= target:
                return self.cursor + int((target - self.cursor_mass) / density)
            self.cursor, self.cursor_mass = hour_end, self.cursor_mass + mass

    def _mass(self, start_us: int, end_us: int) -> float:
        total, at = 0.0, start_us
        while at < end_us:
            hour_end = min((at // HOUR + 1) * HOUR, end_us)
            total += self.intensity(at) * (hour_end - at)
            at = hour_end
        return total


def generate(options: SimOptions) -> Iterator[Simulated]:
    """The endless message stream of a run; the same options give the same bytes."""
    rnd = random.Random(options.seed)
    world = World(options, rnd)
    clock = SlotClock(options, world.intensity)
    resend: list[tuple[int, int, Simulated]] = []
    for k in itertools.count():
        at = clock.at(k, rnd.random())
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
    body = draft.fields
    body["occurred_at"] = _stamp(occurred_us, world.zones[body["tenant_id"]], rnd)
    return Simulated(draft.key.encode(), _encode(body), "valid", at_us, body["event_type"], late)


def _invalid(draft: Draft, at_us: int, world: World, rnd: random.Random) -> Simulated:
    """A message the worker must dead-letter, made from an event that got broken."""
    flaw = rnd.choice(FLAWS)
    body = draft.fields
    body["occurred_at"] = _stamp(draft.at_us, world.zones[body["tenant_id"]], rnd)
    event_type = body["event_type"]
    return Simulated(draft.key.encode(), _BREAK[flaw](body, at_us, rnd), "invalid", at_us,
                     event_type, flaw=flaw)


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


def _stamp(occurred_us: int, zone: tzinfo, rnd: random.Random) -> str | int:
    """`occurred_at` to the millisecond: mostly `...Z`, some local offsets, some epoch ms."""
    roll = rnd.random()
    if roll < 0.15:
        return occurred_us // 1000
    return rfc3339(occurred_us, zone if roll < 0.3 else UTC)


def rfc3339(us: int, tz: tzinfo) -> str:
    if tz is UTC:  # most stamps: formatted directly, a few times faster than isoformat
        ms = us // 1000
        day, second = divmod(ms // 1000, 86400)
        date = _DATES.get(day)
        if date is None:
            if len(_DATES) > 10_000:  # far-future stamps of invalid messages add up
                _DATES.clear()
            year, month, mday = time.gmtime(day * 86400)[:3]
            date = _DATES[day] = f"{year:04d}-{month:02d}-{mday:02d}T"
        hour, second = divmod(second, 3600)
        return f"{date}{hour:02d}:{second // 60:02d}:{second % 60:02d}.{ms % 1000:03d}Z"
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
