"""`pulse simulate`: pace the seeded stream of `streams.traffic` and produce it to Kafka.

`streams.traffic.generate` decides what is sent; this module decides when, produces it
through `streams.produce.Outbox`, shows progress and prints the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pulse.kafka import CLIENT_DEFAULTS, BrokerUnavailable, wait_for_broker
from pulse.settings import Settings

from .broker import BrokerError, ensure_topics
from .produce import Outbox
from .rhythm import SECOND
from .traffic import SimOptions, Simulated, generate, plan_options, rfc3339

BROKER_TIMEOUT_S = 120.0
BATCH_BYTES = 256 * 1024


@dataclass
class Tally:
    """What has been handed to the producer, for the progress lines and the summary."""

    sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    late: int = 0
    flaws: Counter[str] = field(default_factory=Counter)
    joined: dict[bytes, int] = field(default_factory=dict)
    """Per tenant, the highest customer number seen: customers are numbered as they join
    (`<tenant>-cus-<n>`), so this counts them without remembering millions of keys."""

    def add(self, message: Simulated) -> None:
        self.sent += 1
        self.kinds[message.kind] += 1
        if message.kind == "valid":
            self.types[message.event_type or ""] += 1
            self.late += message.late
            if message.event_type != "usage":
                tenant, _, number = message.key.rpartition(b"-cus-")
                if number.isdigit() and int(number) > self.joined.get(tenant, 0):
                    self.joined[tenant] = int(number)
        elif message.kind == "invalid":
            self.flaws[message.flaw or ""] += 1


class Pacer:
    """When a message may go.

    Never before the wall clock reaches its simulated send time, so no `occurred_at`
    is ever ahead of the worker's clock: the history goes as fast as the broker takes
    it. With a rate, a live message also waits until one real second per simulated
    second has passed since the first live send.
    """

    def __init__(self, options: SimOptions) -> None:
        self.live_start_us = options.live_start_us
        self.rate = options.rate
        self.first: float | None = None

    def wait_s(self, at_us: int) -> float:
        wait = at_us / SECOND - time.time()
        if self.rate and at_us >= self.live_start_us:
            now = time.monotonic()
            if self.first is None:
                self.first = now
            wait = max(wait, self.first + (at_us - self.live_start_us) / SECOND - now)
        return wait


class Run:
    """One `pulse simulate` process: broker wait, pacing, producing, Ctrl-C, summary."""

    def __init__(self, settings: Settings, options: SimOptions, events: int | None,
                 duration: float | None) -> None:
        self.settings = settings
        self.options = options
        self.events = events
        self.duration = duration
        self.tally = Tally()
        self.started = time.monotonic()
        self.backfilled: float | None = None
        """Seconds the history took to send, once it is sent and acknowledged."""
        self.stop = asyncio.Event()

    async def main(self, broker_timeout: float) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        _say(self._intro())
        try:
            if await self._unless_stopped(self._prepare(broker_timeout)):
                await self._produce()
        except BrokerUnavailable as exc:
            _say(str(exc))
            return 1
        except (BrokerError, KafkaError) as exc:
            _say(f"pulse simulate: Kafka at {self.settings.kafka_bootstrap} "
                 f"(PULSE_KAFKA_BOOTSTRAP) failed: {exc or type(exc).__name__}")
            print(self._summary(), flush=True)
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        print(self._summary(), flush=True)
        return 0

    async def _prepare(self, broker_timeout: float) -> None:
        await wait_for_broker(self.settings.kafka_bootstrap, broker_timeout, "pulse simulate")
        await ensure_topics(self.settings)

    async def _unless_stopped(self, work: Any) -> bool:
        """Run `work` unless Ctrl-C comes first; True if it finished."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    enable_idempotence=False, max_batch_size=BATCH_BYTES,
                                    **CLIENT_DEFAULTS)
        await producer.start()
        self.started = time.monotonic()
        progress = asyncio.create_task(self._progress())
        try:
            partitions = sorted(await producer.partitions_for(self.settings.topic))
            outbox = Outbox(producer, self.settings.topic, partitions)
            await self._send_all(outbox)
            await outbox.flush()
        finally:
            progress.cancel()
            await producer.stop()

    async def _send_all(self, outbox: Outbox) -> None:
        pacer = Pacer(self.options)
        deadline = self.started + (self.duration or math.inf)
        history = self.options.history_messages
        for message in generate(self.options):
            if self.stop.is_set() or self.tally.sent == self.events:
                return
            wait = pacer.wait_s(message.at_us)
            if wait > 0.001:
                await outbox.flush()
                if await self._sleep(min(wait, deadline - time.monotonic())):
                    return
            if time.monotonic() >= deadline:
                return
            await outbox.put(message.key, message.value)
            self.tally.add(message)
            if self.tally.sent == history:
                await outbox.flush()
                self.backfilled = time.monotonic() - self.started
                _say(self._backfill_done())

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on Ctrl-C; True if stopped."""
        try:
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    async def _progress(self) -> None:
        """A line a second while the history goes out, then one every ten seconds."""
        last_sent, last_at = 0, time.monotonic()
        history = self.options.history_messages
        while True:
            await asyncio.sleep(1.0 if self.backfilled is None and history else 10.0)
            now, sent = time.monotonic(), self.tally.sent
            pace = f"{(sent - last_sent) / (now - last_at):,.0f}/s"
            if self.backfilled is None and history:
                done = f"backfill {sent:,} of {history:,} messages ({sent / history:.0%})"
            else:
                done = f"{sent:,} sent"
            _say(f"pulse simulate: {done}, {pace}, {now - self.started:.0f} s elapsed")
            last_sent, last_at = sent, now

    def _intro(self) -> str:
        o = self.options
        live = f"{o.rate:g} messages/s" if o.rate else "the history's pace"
        plan = (f"backfill {o.history_messages:,} messages over {_days(o.history_s)} "
                f"from {rfc3339(o.start_us, UTC)} as fast as the broker takes them, then live "
                f"at {live}" if o.history_messages else
                f"live at {live} from {rfc3339(o.start_us, UTC)}")
        return (f"pulse simulate: seed {o.seed}, {o.tenants} tenants x {o.campaigns} campaigns "
                f"x {o.customers:,} customers; {plan}; to topic {self.settings.topic} on "
                f"{self.settings.kafka_bootstrap}")

    def _backfill_done(self) -> str:
        o, took = self.options, self.backfilled or 0.0
        live = f"{o.rate:g} messages/s" if o.rate else "the history's pace"
        return (f"pulse simulate: backfill sent: {o.history_messages:,} messages over "
                f"{_days(o.history_s)} in {took:.1f} s "
                f"({o.history_messages / max(took, 1e-9):,.0f}/s); live from now at {live}")

    def _summary(self) -> str:
        t, o = self.tally, self.options
        elapsed = max(time.monotonic() - self.started, 1e-9)
        how = "stopped" if self.stop.is_set() else "done"
        return "\n".join([
            f"pulse simulate: {how}: {t.sent:,} messages in {elapsed:.1f} s "
            f"({t.sent / elapsed:,.0f}/s) to topic {self.settings.topic}",
            *([f"  history     {o.history_messages:>9,}  messages over "
               f"{_days(o.history_s)}, sent in {self.backfilled:.1f} s"]
              if self.backfilled is not None else []),
            f"  events      {t.kinds['valid']:>9,}  {_counts(t.types)}",
            f"  late        {t.late:>9,}  (of the events: occurred hours to days back)",
            f"  duplicates  {t.kinds['duplicate']:>9,}  (exact copies sent again)",
            f"  invalid     {t.kinds['invalid']:>9,}  {_counts(t.flaws)}",
            f"  world       {o.tenants} tenants, {o.tenants * o.campaigns} campaigns, "
            f"{o.tenants * o.customers:,} customers at a time "
            f"({sum(t.joined.values()):,} took part)",
            f"  repeat with --seed {o.seed} --start {rfc3339(o.start_us, UTC)} "
            f"--backfill-days {o.history_s / 86400:g} --rate {o.rate:g}",
        ])


def run_simulate(settings: Settings, *, tenants: int, campaigns: int, customers: int,
                 rate: float, duration: float | None, events: int | None, seed: int | None,
                 start: str | None, duplicates: float, late: float, invalid: float,
                 backfill_days: float | None = None,
                 broker_timeout: float = BROKER_TIMEOUT_S) -> int:
    """`pulse simulate`; returns the exit code (2: bad options, 1: Kafka failed)."""
    try:
        if duration is not None and not duration > 0:
            raise ValueError(f"--duration must be a number of seconds > 0, got {duration}")
        options = plan_options(
            tenants=tenants, campaigns=campaigns, customers=customers, rate=rate,
            events=events, seed=secrets.randbelow(2**31) if seed is None else seed,
            start=start, duplicates=duplicates, late=late, invalid=invalid,
            steps=settings.funnel_steps, now=datetime.now(UTC), backfill_days=backfill_days)
    except ValueError as exc:
        _say(f"pulse simulate: {exc}")
        return 2
    run = Run(settings, options, events, duration)
    return asyncio.run(run.main(broker_timeout))


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in sorted(counter.items()))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
