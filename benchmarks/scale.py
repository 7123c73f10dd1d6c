"""`pulse bench scale`: how evenly one tenant's load spreads over the workers.

For each worker count, a fresh broker, that many `pulse worker`s (each with its own state
folder) and a stream of `--tenants` tenants' events (one by default: the case a tenant
pinned to one partition could never spread). Once every event is counted, each worker's
share is the events its sessions counted, read from the journal (the worker log names
the session of each keyed partition it claims); even is 1/workers, and the goal is every
share within 20 % of it.

Two cores show the split, not a speed-up: every worker, the broker and the producer
share them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS
from pulse.rollups import journal
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .common import Summary, bench_settings, broker, events, produce, say, spawn

GOAL = 0.2
READY = b"ingest reads input partitions"


async def _shares(settings: Settings, sessions: dict[str, int], n: int,
                  timeout: float) -> Counter[int]:
    """Events counted per worker, read from the journal once all `n` are counted."""
    topic = Topics(settings.topic, settings.dlq_topic).rollups
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
            while not all(log.exists() and READY in log.read_bytes() for log in logs):
                await asyncio.sleep(0.2)
            await asyncio.sleep(8)  # the last joins settle the assignment
            messages = events(n, duplicates=0.0, invalid=0.0, tenants=tenants)
            await produce(bootstrap, settings.topic, messages, n)
            sessions: dict[str, int] = {}
            shares = await _shares(settings, sessions, n, timeout=max(300, n / 5_000))
            for w, log in enumerate(logs):
                for session in re.findall(rb"claimed at journal offset \d+ \(session (\w+)\)",
                                          log.read_bytes()):
                    sessions[session.decode()] = w
            shares = await _shares(settings, sessions, n, timeout=60)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                process.wait(120)
    fractions = {w: shares.get(w, 0) / n for w in range(workers)}
    worst = max(abs(f * workers - 1) for f in fractions.values())
    say(f"  {workers} workers, {tenants} tenant(s): shares "
        + ", ".join(f"{f:.1%}" for f in fractions.values()) + f" (worst {worst:.0%} off even)")
    return {"workers": workers, "worst_off_even": round(worst, 3),
            **{f"share_{w}": round(f, 4) for w, f in fractions.items()}}


def run_scale(n: int, tenants: int, counts: list[int], quick: bool) -> int:
    summary = Summary("scale", quick)
    rows = [asyncio.run(measure(w, n, tenants)) for w in counts]
    summary.numbers.update({"events": n, "tenants": tenants, "runs": rows})
    line = "; ".join(f"{r['workers']} workers: worst share {r['worst_off_even']:.0%} off even"
                     for r in rows) + f" ({tenants} tenant(s), {n:,} events; goal {GOAL:.0%})"
    return summary.finish(line, all(r["worst_off_even"] <= GOAL for r in rows),
                          f"every share within {GOAL:.0%} of even")
