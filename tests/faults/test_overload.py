"""Overload: a burst far above the steady rate while dashboards keep asking.

Fault injected: after a short steady phase (`STEADY_RATE` events/s), the rest of
`PULSE_BURST_EVENTS` messages (default 200 000; the full run is 2 000 000) of
`pulse.benchmarks.workload.events` (5 % exact duplicates, 0.1 % invalid, seven days of
event time) is produced as fast as the broker takes it, at least 10x the steady rate,
so one worker faces a large backlog. Meanwhile a `pulse api` process is asked for
`/analytics/overview` in a loop, for every tenant, over a whole-hour range and a ragged
one whose edges cut through hours full of events (rollups and lake).

What must hold: every answer is 200 and carries an `as_of` that never moves backwards
and is honest: an answer whose `as_of` is past the end of the burst has counted every
message of it, exactly. Nothing is lost (the folded journal counts every message; the
rollups, the lake and the API equal the oracle over `decode_event` of the messages);
and the worker's peak resident memory (VmHWM of the worker and its children) stays
under `RSS_BOUND_MIB`. Printed: the peak, the produce rate, the time until the API had
folded everything and until `as_of` passed the burst, the largest `as_of` lag an
answer showed, and the longest wait for an answer.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from pulse.benchmarks.workload import TENANTS, events, produce
from pulse.rollups import report
from pulse.rollups.store import ALL
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from tests import oracle
from tests.api_process import (
    OVERVIEW_KEYS,
    Api,
    iso,
    overview_differences,
    peak_rss_mib,
    start_api,
)
from tests.deployment import Pulse, counters, read_all
from tests.streams.test_faults import READY
from tests.streams.test_pipeline import HOUR, STEPS

pytestmark = [pytest.mark.broker, pytest.mark.alone]  # the burst's rate is asserted

BURST = int(os.environ.get("PULSE_BURST_EVENTS", "200000"))
STEADY_RATE = 2_000
STEADY_SECONDS = 3
RSS_BOUND_MIB = 700 + BURST * 400 / 2**20
"""The worker's idle footprint (~300 MiB for both processes) with room, plus 400 bytes
per event: the lake sink buffers up to 400 000 rows per input partition while its
writes catch up, and the rollups hold dedup digests, journeys and buckets (measured:
~400 MiB at 200 000 events, ~1 170 MiB at 2 000 000)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Answer:
    """One overview answer as a dashboard got it."""

    asked: float
    """Wall-clock seconds when the request was sent."""
    answered: float
    tenant: str
    which: int
    """Index of the range asked for."""
    status: int
    as_of_us: int | None
    numbers: dict


class Dashboard(threading.Thread):
    """Asks for every tenant's overview over every range in a loop; keeps every answer."""

    def __init__(self, api: Api, ranges: list[tuple[int, int]]) -> None:
        super().__init__(daemon=True)
        self.api, self.ranges = api, ranges
        self.answers: list[Answer] = []
        self.problems: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            tenant = TENANTS[i % len(TENANTS)]
            which = (i // len(TENANTS)) % len(self.ranges)
            asked = time.time()
            try:
                status, body = self.api.overview(tenant, *self.ranges[which])
            except OSError as exc:
                self.problems.append(f"{tenant}: {type(exc).__name__}: {exc}")
                status, body = 0, {}
            as_of = body.get("as_of")
            self.answers.append(Answer(asked, time.time(), tenant, which, status,
                                       _us(as_of) if as_of else None,
                                       {k: body.get(k) for k in OVERVIEW_KEYS}))
            if status != 200 or not as_of:
                self.problems.append(f"{tenant} range {which}: {status} {str(body)[:300]}")
            i += 1

    def behind(self, end_us: int) -> dict[tuple[str, int], str | None]:
        """(tenant, range) -> the latest as_of, of those without an answer past `end_us`."""
        latest: dict[tuple[str, int], int | None] = {
            (t, w): None for t in TENANTS for w in range(len(self.ranges))}
        for a in self.answers:
            latest[a.tenant, a.which] = a.as_of_us
        return {k: None if v is None else iso(v) for k, v in latest.items()
                if v is None or v < end_us}

    def stop(self) -> None:
        self.stopping.set()
        self.join()


class Memory(threading.Thread):
    """Samples the worker's and its children's VmHWM; keeps the largest sum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for pid, mib in peak_rss_mib(self.pid).items():
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), mib)

    def stop(self) -> float:
        self.stopping.set()
        self.join()
        self.sample()
        return sum(self.peaks.values())


def _us(text: str) -> int:
    """An RFC 3339 `as_of` as epoch microseconds, exactly."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


def test_a_burst_drains_with_answers_exact_and_memory_bounded(pulse: Pulse):
    now_ms = time.time_ns() // 1_000_000
    messages = list(events(BURST, seed=7, now_ms=now_ms))
    pulse.ensure_topics()
    worker = pulse.start_worker()
    api = start_api(pulse)
    worker.wait_for_log(READY)
    memory = Memory(worker.pid)
    memory.start()

    # Steady traffic first, until every tenant's answers carry an as_of.
    steady = STEADY_RATE * STEADY_SECONDS
    step = STEADY_RATE // 4
    for i in range(0, steady, step):
        pulse.produce((key, value, None) for key, value in messages[i : i + step])
        time.sleep(0.25)
    base = now_ms * 1000 - now_ms * 1000 % HOUR
    ranges = [(base - 8 * 24 * HOUR, base + 2 * HOUR),
              (base - 5 * 24 * HOUR + 1_234_567, base - 20 * 60_000_000)]
    deadline = time.monotonic() + 30
    while not all(api.overview(t, *ranges[0])[1].get("as_of") for t in TENANTS):
        assert time.monotonic() < deadline, "no as_of for every tenant after the steady phase"
        time.sleep(0.2)

    # The burst, with dashboards asking all along, until the backlog is drained and every
    # tenant's answers say so.
    dashboard = Dashboard(api, ranges)
    dashboard.start()
    burst_started = time.monotonic()
    produce_seconds = asyncio.run(produce(pulse.settings.kafka_bootstrap, pulse.topics.input,
                                          iter(messages[steady:]), len(messages) - steady))
    burst_end_us = time.time_ns() // 1000
    api.wait_until_read(len(messages), timeout=max(120, BURST / 5_000))
    drain_seconds = time.monotonic() - burst_started
    deadline = time.monotonic() + 60
    while behind := dashboard.behind(burst_end_us):
        assert dashboard.is_alive() and time.monotonic() < deadline, (
            f"as_of did not get past the end of the burst ({iso(burst_end_us)}): {behind}")
        time.sleep(0.2)
    as_of_seconds = time.monotonic() - burst_started
    dashboard.stop()
    peak_mib = memory.stop()

    answers = dashboard.answers
    burst_rate = (len(messages) - steady) / produce_seconds
    max_lag = max(a.answered - a.as_of_us / 1e6 for a in answers if a.as_of_us)
    max_wait = max(a.answered - a.asked for a in answers)
    print(f"\noverload: {len(messages):,} messages; burst produced at {burst_rate:,.0f}/s "
          f"({burst_rate / STEADY_RATE:.0f}x the steady {STEADY_RATE:,}/s) in "
          f"{produce_seconds:.1f} s; the API had folded everything {drain_seconds:.1f} s and "
          f"as_of was past the burst {as_of_seconds:.1f} s after it began; "
          f"{len(answers):,} API answers, {len(dashboard.problems)} not 200 with as_of, "
          f"largest as_of lag {max_lag:.1f} s, longest wait {max_wait:.1f} s; "
          f"worker peak RSS {peak_mib:,.0f} MiB (bound {RSS_BOUND_MIB:,.0f}; by pid "
          f"{ {pid: round(mib) for pid, mib in memory.peaks.items()} })")
    assert burst_rate >= 10 * STEADY_RATE

    # Every answer was 200 with an as_of that never went back.
    assert not dashboard.problems, dashboard.problems[:10]
    for tenant in TENANTS:
        for which in range(len(ranges)):
            seen = [a.as_of_us for a in answers if (a.tenant, a.which) == (tenant, which)]
            backwards = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b < a]
            assert not backwards, (tenant, which, [(iso(a), iso(b)) for a, b in backwards[:5]])

    # Nothing lost: the journal, the rollups and the lake equal the oracle.
    now_us = now_ms * 1000
    valid = [e for _, raw in messages if isinstance(e := decode_event(raw, now_us), Event)]
    unique = oracle.unique(valid)
    store = pulse.rollups(until=read_all(len(messages)), timeout=120)
    totals = counters(store)
    assert (totals["read"], totals["accepted"], totals["duplicates"], totals["dead_letters"]) == (
        len(messages), len(unique), len(valid) - len(unique), len(messages) - len(valid))
    h0, h1 = ranges[0][0] // HOUR, ranges[0][1] // HOUR
    by_tenant: dict[str, list[Event]] = defaultdict(list)
    for e in unique:
        by_tenant[e.tenant_id].append(e)
    want = {(tenant, which): oracle.overview(by_tenant[tenant], tenant, None, False, frm, to,
                                             STEPS, 30.0)
            for tenant in TENANTS for which, (frm, to) in enumerate(ranges)}
    for tenant in TENANTS:
        got = store.total(tenant, ALL, h0, h1)
        assert oracle.approx_equal(
            {**msgspec.to_builtins(report.overview(got, STEPS)), "usage": report.usage(got)},
            {**want[tenant, 0],
             "usage": oracle.usage_report(by_tenant[tenant], tenant, *ranges[0])}), tenant
    assert pulse.lake_rows(len(valid), timeout=120) == len(valid)
    (rows, offsets), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM {events}")
    assert rows == offsets == len(valid)
    assert Counter(pulse.lake_sql("SELECT tenant_id, id FROM {events}")) == Counter(
        (e.tenant_id, e.id) for e in valid)

    # as_of was honest: every answer it called complete past the burst was complete.
    early = [f"{a.tenant} range {a.which} as of {iso(a.as_of_us)}: got {a.numbers}, "
             f"want {want[a.tenant, a.which]}"
             for a in answers if a.as_of_us is not None and a.as_of_us >= burst_end_us
             and not oracle.approx_equal(a.numbers, want[a.tenant, a.which])]
    assert not early, early[:3]
    differences = [d for tenant in TENANTS
                   for d in overview_differences(api, by_tenant[tenant], (tenant,), ranges)]
    assert not differences, differences[:3]

    assert peak_mib < RSS_BOUND_MIB
    assert worker.alive() and "ingest process exited" not in worker.log()
