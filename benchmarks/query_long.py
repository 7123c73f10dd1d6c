"""The long-range cases of `pulse bench query`: 90 days, asked by 1 and by 4 clients.

After `pulse compact` (which writes the summaries, `streams.summaries`), Pulse's own
lake path answers a 90-day overview (measures and intents) and a 90-day funnel of one
tenant and campaign, with unaligned edges, twice: with the summaries, and with them
turned off, which reads every event of the range as Pulse did before they existed (the
baseline beside it). Both must give the same numbers, and the hand-written DuckDB
question of `benchmarks.query` too, before anything is timed. Then each way is asked by
1 client, and by 4 at once (asyncio tasks on one reader, as four dashboards hitting one
API process: its thread pool and per-tenant slots bound them as they do there); every
request's latency counts, and the p99 at 4 clients is the number (goals: overview
<= 50 ms, funnel <= 100 ms).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pulse.api.params import Range
from pulse.api.query import Query
from pulse.lakefs import LakeStore
from pulse.settings import Settings

from . import lakegen
from .harness import say
from .query import (
    CAMPAIGN,
    DAY_US,
    HOUR_US,
    MINUTE_US,
    TENANT,
    HandWritten,
    Numbers,
    Question,
    api_query,
    percentile,
)

DAYS = 90
LAKE_DAYS = 100
"""The benchmark lake's days: the 90-day range fits inside with room at both ends."""
CLIENTS = (1, 4)
GOALS = {"overview": 0.050, "funnel": 0.100}
"""p99 at 4 clients, in seconds."""
FLOORS = GOALS
"""Past these the full-size run fails: the goals, since they were reached with room
(p99 30 and 42 ms, December)."""


def question(spec: lakegen.LakeSpec) -> Question:
    """90 days from 10:17:23.456789 to 15:42:07.123 (UTC), ending 4 days before the lake."""
    last_day = spec.end_us // DAY_US - 4
    to_us = last_day * DAY_US + 15 * HOUR_US + 42 * MINUTE_US + 7_123_000
    from_us = (last_day - DAYS) * DAY_US + 10 * HOUR_US + 17 * MINUTE_US + 23_456_789
    return Question(TENANT, CAMPAIGN, from_us, to_us)


async def overview(query: Query, q: Question) -> Any:
    answer = await query.total(q.tenant, q.campaign, Range(q.from_us, q.to_us), funnel=False)
    m = answer.value
    return (m.calls, m.chats, m.duration_s, m.engaged, {k: v for k, v in m.intents.items() if v})


async def funnel(query: Query, q: Question) -> Any:
    answer = await query.total(q.tenant, q.campaign, Range(q.from_us, q.to_us),
                               measures=False)
    return {k: v for k, v in answer.value.funnel.items() if v}


ASKS: dict[str, Callable[[Query, Question], Awaitable[Any]]] = {
    "overview": overview, "funnel": funnel}


@dataclass(frozen=True)
class Latencies:
    """Every request's seconds, by case, way and clients."""

    times: dict[tuple[str, str, int], list[float]]

    def p(self, key: tuple[str, str, int], q: float) -> float:
        return percentile(self.times[key], q)

    def numbers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (case, way, clients), times in self.times.items():
            prefix = f"long_{case}_{way}_{clients}c"
            out[f"{prefix}_requests"] = len(times)
            out[f"{prefix}_p50_ms"] = round(statistics.median(times) * 1000, 1)
            out[f"{prefix}_p99_ms"] = round(percentile(times, 0.99) * 1000, 1)
        return out


async def clients(n: int, requests: int, ask: Callable[[], Awaitable[Any]]) -> list[float]:
    """`n` clients each asking `requests` times, one after another; every latency."""
    async def client() -> list[float]:
        out = []
        for _ in range(requests):
            started = time.perf_counter()
            await ask()
            out.append(time.perf_counter() - started)
        return out

    return [t for times in await asyncio.gather(*(client() for _ in range(n))) for t in times]


async def measure(root: str, q: Question, requests: int) -> Latencies:
    """Check the three ways agree, then time both of Pulse's at 1 and 4 clients."""
    ways = {way: api_query(LakeStore.open(root), Settings(lake=root), use_summaries=use)
            for way, use in (("summaries", True), ("events", False))}
    hand = HandWritten(root)
    try:
        theirs = hand.ask(q)
        want = {"overview": (theirs.calls, theirs.chats, theirs.duration_s, theirs.engaged,
                             theirs.intents), "funnel": theirs.funnel}
        for case, ask in ASKS.items():
            for way, (query, _) in ways.items():
                got = await ask(query, q)
                if not _same(got, want[case]):
                    raise RuntimeError(f"90-day {case} {way}: {got} != hand-written "
                                       f"{want[case]}")
        say(f"  90 days: the three ways agree ({theirs.calls + theirs.chats:,} "
            f"conversations, {sum(theirs.funnel.values()):,} journeys)")
        times: dict[tuple[str, str, int], list[float]] = {}
        for case, ask in ASKS.items():
            for way, (query, _) in ways.items():
                for n in CLIENTS:
                    # the events way takes seconds an answer: fewer of them
                    count = requests if way == "summaries" else max(2, requests // 10)
                    times[case, way, n] = await clients(
                        n, count, lambda ask=ask, query=query: ask(query, q))
                    say(f"  90-day {case}, {way}, {n} client{'s' if n > 1 else ''}: "
                        f"p50 {statistics.median(times[case, way, n]) * 1000:,.1f} ms, "
                        f"p99 {percentile(times[case, way, n], 0.99) * 1000:,.1f} ms")
        return Latencies(times)
    finally:
        for _, reader in ways.values():
            reader.close()
        hand.close()


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, tuple):
        numbers = Numbers(got[0], got[1], got[2], got[3], got[4], {})
        return not numbers.differences(Numbers(want[0], want[1], want[2], want[3], want[4],
                                               {}))
    return bool(got == want)


def line(latencies: Latencies) -> tuple[str, bool]:
    """The summary's words on the 90-day cases, and whether they make their floors."""
    words, ok = [], True
    for case in ASKS:
        fast = latencies.p((case, "summaries", 4), 0.99)
        slow = latencies.p((case, "events", 4), 0.99)
        ok &= fast <= FLOORS[case]
        words.append(f"{case} p99 {fast * 1000:,.0f} ms (every event read: "
                     f"{slow * 1000:,.0f} ms; goal {GOALS[case] * 1000:.0f})")
    return f"90 days at 4 clients: {', '.join(words)}", ok


def run(root: str, spec: lakegen.LakeSpec, requests: int) -> Latencies:
    return asyncio.run(measure(root, question(spec), requests))
