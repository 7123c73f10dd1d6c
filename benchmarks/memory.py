"""`pulse bench memory`: resident memory per event the rollups hold inside retention.

For each size, a fresh worker ingests that many unique events, all inside retention,
until its rollups hold every one. The rollup state (the dedup filter and the digests not
yet spilled, journeys, buckets, counters) lives in the worker's Faust process; its
resident memory (and its anonymous part, which excludes file pages) minus that of the
same worker idle, divided by the events held, is the figure. The digests themselves
live in runs under PULSE_STATE_DIR, reported apart as bytes on disk per event: the 20
bytes of an exact dedup entry are the baseline beside them. The ingest child's peak is
reported too: it buffers rows for the lake and does not grow with what the rollups
hold.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from .harness import Summary, bench_settings, broker, ingest_child, rss_mb, say
from .ingest import running_worker
from .workload import events, produce

GOAL, FLOOR = 12, 40
"""Bytes of worker RSS per retained event at the largest size (goal, and exit 1 above)."""


def _disk_bytes(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(path, name))
               for path, _, names in os.walk(folder) for name in names if name.endswith(".run"))


async def hold(n: int) -> dict[str, float]:
    """Worker memory idle, then holding `n` unique events."""
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root)
        from pulse.streams.broker import ensure_topics

        await ensure_topics(settings)
        async with running_worker(settings, root) as worker:
            await asyncio.sleep(3)
            pid = worker.process.pid
            idle, idle_anon = rss_mb(pid), rss_mb(pid, "RssAnon")
            say(f"  {n:,} events: idle worker {idle:,.0f} MiB; producing")
            await produce(bootstrap, settings.topic, events(n, duplicates=0.0, invalid=0.0), n)
            started = time.monotonic()
            while (await worker.watch.poll()).get("accepted", 0) < n:
                worker.check()
                if time.monotonic() - started > max(300, n / 20_000):
                    raise RuntimeError("the worker did not take every event in time")
            await asyncio.sleep(2)
            held, held_anon = rss_mb(pid), rss_mb(pid, "RssAnon")
            child = ingest_child(pid)
            return {"idle_mb": idle, "held_mb": held, "idle_anon_mb": idle_anon,
                    "held_anon_mb": held_anon, "peak_mb": rss_mb(pid, "VmHWM"),
                    "child_peak_mb": rss_mb(child, "VmHWM") if child else 0.0,
                    "disk_mb": _disk_bytes(root / "state") / 2**20,
                    "seconds": time.monotonic() - started}


def journey_bytes(n: int) -> tuple[float, float]:
    """(bytes of memory, bytes packed) per journey, for `n` journeys of one or two steps
    each as a keyed partition keeps them (`PartitionState.journeys`: per (tenant,
    campaign), customer -> packed step times), measured with tracemalloc."""
    import random
    import tracemalloc

    from pulse.rollups import funnel

    rnd = random.Random(7)
    steps = 3
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    journeys: dict[tuple[str, str | None], dict[str, bytes]] = {}
    packed = 0
    for i in range(n):
        journey = None
        for step in range(rnd.randrange(1, 3)):
            journey = funnel.apply_step(journey, steps, step, 1_800_000_000_000_000 + i)
        assert journey is not None
        group = journeys.setdefault(("acme", ("spring", "summer", None)[i % 3]), {})
        group[f"customer-{i}"] = journey
        packed += len(journey)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / n, packed / n


def run_memory(counts: list[int], quick: bool) -> int:
    summary = Summary("memory", quick)
    per_journey, packed = journey_bytes(20_000 if quick else 1_000_000)
    summary.numbers["journey_bytes"] = round(per_journey, 1)
    summary.numbers["journey_packed_bytes"] = round(packed, 1)
    say(f"  journeys: {per_journey:,.0f} B each in memory (customer id and dict entry "
        f"included), {packed:,.0f} B packed")
    rows = []
    for n in counts:
        result = asyncio.run(hold(n))
        per_event = (result["held_mb"] - result["idle_mb"]) * 2**20 / n
        anon = (result["held_anon_mb"] - result["idle_anon_mb"]) * 2**20 / n
        disk = result["disk_mb"] * 2**20 / n
        rows.append((n, per_event, anon, disk, result))
        say(f"  {n:,} events held: worker {result['held_mb']:,.0f} MiB (peak "
            f"{result['peak_mb']:,.0f}, idle {result['idle_mb']:,.0f}) = {per_event:,.1f} B/event"
            f" resident, {anon:,.1f} anonymous; digests on disk {disk:,.1f} B/event; ingest "
            f"child peak {result['child_peak_mb']:,.0f} MiB")
    summary.numbers["sizes"] = [
        {"events": n, "bytes_per_event": round(b, 1), "anonymous_bytes_per_event": round(a, 1),
         "disk_bytes_per_event": round(d, 1), **{k: round(v, 1) for k, v in r.items()}}
        for n, b, a, d, r in rows]
    largest = rows[-1][1]
    line = ("worker RSS per retained event: "
            + ", ".join(f"{n / 1e6:g} M: {b:,.1f} B ({a:,.1f} anonymous)" for n, b, a, _, _ in rows)
            + f"; digests on disk {rows[-1][3]:,.1f} B/event (an exact entry is 20); goal "
            f"{GOAL} B; a journey {per_journey:,.0f} B ({packed:,.0f} packed)")
    return summary.finish(line, largest <= FLOOR, f"{FLOOR} B/event")
