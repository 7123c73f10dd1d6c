"""`pulse bench scale`: how evenly one tenant's load spreads over the workers.

For each worker count, a fresh broker, that many `pulse worker`s (each with its own state
folder) and a stream of `--tenants` tenants' events (one by default: the case a tenant
pinned to one partition could never spread). Once every event is counted, each worker's
share is the events its sessions counted, read from the journal (the worker log names
the session of each keyed partition it claims); even is 1/workers, and the goal is every
share within 20 % of it.

Two cores show the split, not a speed-up: every worker, the broker and the producer
share them. What to expect on more cores is printed with the result (`SIXTEEN_CORES`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS
from pulse.rollups import journal
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .harness import Summary, bench_settings, broker, say, spawn
from .workload import events, produce

GOAL = 0.2
READY = b"ingest reads input partitions"
CLAIMED = re.compile(rb"keyed partition (\d+): claimed at journal offset (\d+) \(session (\w+)\)")
SIXTEEN_CORES = (
    "On 16 cores (broker and lake elsewhere), expect 8 workers, PULSE_PARTITIONS a "
    "multiple of 8 and an input topic of at least 8 partitions, to take one tenant "
    "about 8x as fast as one worker: a worker is two processes, ingest (about 6 us of "
    "CPU per message) and rollups (about 5 us), so two cores each; the keyed partition "
    "of an event is drawn from its (tenant, id) digest and a journey's from its "
    "(tenant, campaign, customer), so one tenant's work divides evenly between the "
    "partitions, and so between workers that hold equally many of them. Shares are "
    "uneven only when partitions do not divide by workers (8 on 3: 37.5/37.5/25 %), "
    "and the speed-up ends where the broker or the lake's store binds. Two cores here "
    "show the split, not the speed-up.")


async def _shares(settings: Settings, sessions: dict[str, int], n: int,
                  timeout: float) -> Counter[int]:
    """Events counted per worker, read from the journal once all `n` are counted (a
    session no worker's log names counts for worker -1)."""
    topic = Topics.of(settings).rollups
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                max_partition_fetch_bytes=32 * 1024 * 1024, **CLIENT_DEFAULTS)
    await consumer.start()
    shares: Counter[int] = Counter()
    owners: Counter[str] = Counter()
    try:
        tps = [TopicPartition(topic, q) for q in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while sum(owners.values()) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(owners.values()):,} of {n:,} events counted")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    delta = journal.decode(record.value)
                    if isinstance(delta, journal.Delta) and delta.counters.get("accepted"):
                        owners[delta.session[:12]] += delta.counters["accepted"]
        if sum(owners.values()) != n:
            raise RuntimeError(f"{sum(owners.values()):,} events counted, not {n:,}: the "
                               "rollups are not exact")
        for session, counted in owners.items():
            shares[sessions.get(session, -1)] += counted
        return shares
    finally:
        await consumer.stop()


async def measure(workers: int, n: int, tenants: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root)
        from pulse.streams.broker import ensure_topics

        await ensure_topics(settings)
        logs = [root / f"worker-{w}.log" for w in range(workers)]
        processes = [spawn(["worker"], settings, log, PULSE_STATE_DIR=str(root / f"state-{w}"))
                     for w, log in enumerate(logs)]
        try:
            await _settled(logs, processes, settings.partitions)
            messages = events(n, duplicates=0.0, invalid=0.0, tenants=tenants)
            await produce(bootstrap, settings.topic, messages, n)
            await _shares(settings, {}, n, timeout=max(300, n / 5_000))
            sessions = {m[3].decode(): w for w, log in enumerate(logs)
                        for m in CLAIMED.finditer(log.read_bytes())}
            shares = await _shares(settings, sessions, n, timeout=60)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait(120)
    if shares.get(-1):
        raise RuntimeError(f"{shares[-1]:,} events were counted by sessions no worker's log "
                           "names")
    fractions = {w: shares.get(w, 0) / n for w in range(workers)}
    worst = max(abs(f * workers - 1) for f in fractions.values())
    say(f"  {workers} workers, {tenants} tenant(s): shares "
        + ", ".join(f"{f:.1%}" for f in fractions.values()) + f" (worst {worst:.0%} off even)")
    return {"workers": workers, "worst_off_even": round(worst, 3),
            **{f"share_{w}": round(f, 4) for w, f in fractions.items()}}


async def _settled(logs: list[Path], processes: list[subprocess.Popen[bytes]],
                   partitions: int, timeout: float = 120) -> None:
    """Wait until every worker reads input and the keyed partitions are split: each
    claimed, the latest claims (the highest journal offsets) spread over every worker
    that can hold one."""
    deadline = time.monotonic() + timeout
    while True:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited:\n{log.read_text()[-2000:]}")
        texts = [log.read_bytes() if log.exists() else b"" for log in logs]
        latest: dict[int, tuple[int, int]] = {}
        for w, text in enumerate(texts):
            for m in CLAIMED.finditer(text):
                q = int(m[1])
                latest[q] = max(latest.get(q, (-1, -1)), (int(m[2]), w))
        holders = {w for _, w in latest.values()}
        if all(READY in text for text in texts) and len(latest) == partitions and \
                len(holders) == min(len(logs), partitions):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the keyed partitions were not split over {len(logs)} workers "
                               f"in {timeout:.0f} s (latest claims: {latest})")
        await asyncio.sleep(0.2)


def run_scale(n: int, tenants: int, counts: list[int], quick: bool) -> int:
    summary = Summary("scale", quick)
    rows = [asyncio.run(measure(w, n, tenants)) for w in counts]
    summary.numbers.update({"events": n, "tenants": tenants, "runs": rows,
                            "sixteen_cores": SIXTEEN_CORES})
    say(SIXTEEN_CORES)
    line = "; ".join(f"{r['workers']} workers: worst share {r['worst_off_even']:.0%} off even"
                     for r in rows) + f" ({tenants} tenant(s), {n:,} events; goal {GOAL:.0%})"
    return summary.finish(line, all(r["worst_off_even"] <= GOAL for r in rows),
                          f"every share within {GOAL:.0%} of even")
