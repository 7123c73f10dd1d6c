"""`pulse bench memory`: resident memory per event the rollups hold inside retention.

For each size, a fresh worker ingests that many unique events, all inside retention,
until its rollups hold every one. The rollup state (dedup digests, journeys, counters)
lives in the worker's Faust process; its resident memory minus that of the same worker
idle, divided by the events held, is the figure. The baseline beside it is the
digests alone (16 bytes of id digest per event), the least any exact dedup must keep.
The ingest child's peak is reported too: it buffers rows for the lake and does not
grow with what the rollups hold.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from .common import Summary, bench_settings, broker, events, ingest_child, produce, rss_mb, say
from .ingest import running_worker

GOAL, FLOOR = 150, 300


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
            idle = rss_mb(pid)
            say(f"  {n:,} events: idle worker {idle:,.0f} MiB; producing")
            await produce(bootstrap, settings.topic, events(n, duplicates=0.0, invalid=0.0), n)
            started = time.monotonic()
            while (await worker.watch.poll()).get("accepted", 0) < n:
                worker.check()
                if time.monotonic() - started > max(300, n / 20_000):
                    raise RuntimeError("the worker did not take every event in time")
            held = rss_mb(pid)
            child = ingest_child(pid)
            return {"idle_mb": idle, "held_mb": held, "peak_mb": rss_mb(pid, "VmHWM"),
                    "child_peak_mb": rss_mb(child, "VmHWM") if child else 0.0,
                    "seconds": time.monotonic() - started}


def run_memory(counts: list[int], quick: bool) -> int:
    summary = Summary("memory", quick)
    rows = []
    for n in counts:
        result = asyncio.run(hold(n))
        per_event = (result["held_mb"] - result["idle_mb"]) * 1024 * 1024 / n
        rows.append((n, per_event, result))
        say(f"  {n:,} events held: worker {result['held_mb']:,.0f} MiB (peak "
            f"{result['peak_mb']:,.0f}, idle {result['idle_mb']:,.0f}) = {per_event:,.0f} B/event;"
            f" ingest child peak {result['child_peak_mb']:,.0f} MiB")
    largest = rows[-1][1]
    summary.numbers["sizes"] = [
        {"events": n, "bytes_per_event": round(b), **{k: round(v, 1) for k, v in r.items()}}
        for n, b, r in rows]
    line = ("bytes per retained event: " + ", ".join(f"{n / 1e6:g} M: {b:,.0f}" for n, b, _ in rows)
            + f" (goal {GOAL}; the id digests alone are 16)")
    return summary.finish(line, largest <= FLOOR, f"{FLOOR} B/event")
