"""`pulse bench recovery`: how long a worker and an API take to start, whatever the history.

One worker ingests N unique events (all inside retention) and checkpoints them; it is
then killed with -9 and started again, and the time from the kill until every keyed
partition is claimed again, with the rollups equal to what they were before the kill,
is the worker's recovery. A fresh `pulse api` is then started, and the time until its
`/readyz` answers 200 is the API's. The same run does N/10 first; the baseline of each
figure is the small run's, and the ratio between them is what history costs (goal:
1.2x at most; 10 s for the worker and 3 s for the API at 20 M). `--quick` runs one small
size: it checks that recovery is exact, not how fast it is.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from pathlib import Path

from .harness import Summary, bench_settings, broker, free_port, say, spawn
from .ingest import JournalWatch, running_worker
from .workload import events, produce

GOAL_RATIO, GOAL_WORKER_S, GOAL_API_S = 1.2, 10.0, 3.0
FLOOR_S = 30.0
CHECKPOINT_SECONDS = 15.0
QUICK_CHECKPOINT_SECONDS = 1.0
"""`--quick` checks answers, not speed: its checkpoints come at once, not 15 s apart."""


def _answers(watch: JournalWatch) -> dict[str, object]:
    """What a reader would answer: every counter and every bucket's measures."""
    totals: dict[str, int] = {}
    for info in watch.store.partitions.values():
        for key, value in info.counters.items():
            totals[key] = totals.get(key, 0) + value
    return {"totals": totals, "buckets": sorted(
        (t, c or "", h, m.events, m.calls, m.chats, m.engaged, tuple(sorted(m.funnel.items())))
        for t, c, h, m in watch.store.buckets())}


def _difference(before: dict[str, object], after: dict[str, object]) -> str:
    if before["totals"] != after["totals"]:
        return f"counters {before['totals']} then {after['totals']}"
    gone = set(before["buckets"]) - set(after["buckets"])  # type: ignore[arg-type]
    new = set(after["buckets"]) - set(before["buckets"])  # type: ignore[arg-type]
    return f"buckets only before: {sorted(gone)[:3]}; only after: {sorted(new)[:3]}"


async def _settle(watch: JournalWatch, n: int, timeout: float) -> dict[str, object]:
    """The rollups once every event is counted and the journeys' steps have arrived (the
    answers stop changing)."""
    deadline = time.monotonic() + timeout
    while (await watch.poll()).get("accepted", 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not take {n:,} events in {timeout:.0f} s")
    answers, still = _answers(watch), 0
    while still < 3:
        await asyncio.sleep(1)
        await watch.poll()
        now = _answers(watch)
        still = still + 1 if now == answers else 0
        answers = now
    return answers


async def measure(n: int, checkpoint_seconds: float = CHECKPOINT_SECONDS) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root, checkpoint_seconds=checkpoint_seconds)
        from pulse.streams.broker import ensure_topics

        await ensure_topics(settings)
        env = {"PULSE_CHECKPOINT_SECONDS": str(checkpoint_seconds)}
        async with running_worker(settings, root, env=env, answers=True) as worker:
            say(f"  {n:,} events: producing")
            await produce(bootstrap, settings.topic, events(n, duplicates=0.0, invalid=0.0), n)
            before = await _settle(worker.watch, n, timeout=max(300, n / 10_000))
            say(f"  {n:,} events in the rollups; waiting for their checkpoints")
            await _checkpointed(Path(settings.lake), settings.partitions, time.time(),
                                timeout=checkpoint_seconds + 60)
            log = worker.log.read_text(errors="replace")
            published = len(re.findall(r"claimed at journal offset", log))
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
            killed = time.monotonic()
            restarted = spawn(["worker"], settings, root / "restarted.log", **env)
            try:
                worker_s, folded, from_checkpoints = await _recovered(
                    root / "restarted.log", settings.partitions, restarted, killed)
                after = await _settle(worker.watch, n, timeout=60)
                if after != before:
                    raise RuntimeError(f"the rollups after the restart differ from before: "
                                       f"{_difference(before, after)}")
                api_s = await _api_ready(settings, root)
            finally:
                os.killpg(restarted.pid, signal.SIGTERM)
                restarted.wait(60)
        say(f"  {n:,} events: worker whole again {worker_s:.1f} s after kill -9 (folded "
            f"{folded:,} journal records after the checkpoints; {published} claims before); "
            f"a fresh API ready in {api_s:.1f} s")
        return {"worker_s": worker_s, "api_s": api_s, "folded": folded,
                "from_checkpoints": from_checkpoints}


async def _checkpointed(lake: Path, partitions: int, since: float, timeout: float) -> None:
    """Wait until every keyed partition has published a checkpoint after `since` (idle
    partitions still get the ingest stage's heartbeats, so one is due every interval)."""
    deadline = time.monotonic() + timeout
    while True:
        newest: dict[str, float] = {}
        for path in lake.glob("_pulse/checkpoints/*/p*/*.ckpt"):
            try:
                newest[path.parent.name] = max(newest.get(path.parent.name, 0.0),
                                               path.stat().st_mtime)
            except FileNotFoundError:  # collected meanwhile
                continue
        if len(newest) >= partitions and min(newest.values()) > since:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no checkpoint of every keyed partition in {timeout:.0f} s "
                               f"(newest: {newest}); see the worker's log")
        await asyncio.sleep(0.2)


async def _recovered(log: Path, partitions: int, process: object,
                     killed: float) -> tuple[float, int, int]:
    """Seconds from the kill until every keyed partition was claimed again, the journal
    records folded after checkpoints, and how many partitions started from one."""
    deadline = time.monotonic() + 300
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        claims = re.findall(r"keyed partition (\d+): claimed .*?; (no checkpoint|checkpoint "
                            r"at journal offset \d+), then folded (\d+) records", text)
        if len({q for q, _, _ in claims}) >= partitions:
            return (time.monotonic() - killed, sum(int(f) for _, _, f in claims),
                    len({q for q, how, _ in claims if how != "no checkpoint"}))
        if time.monotonic() > deadline:
            raise RuntimeError(f"the restarted worker did not claim every partition:\n"
                               f"{text[-2000:]}")
        await asyncio.sleep(0.02)


async def _api_ready(settings: object, root: Path) -> float:
    import urllib.request

    port = free_port()
    started = time.monotonic()
    api = spawn(["api"], settings, root / "api.log", PULSE_API_PORT=str(port),  # type: ignore[arg-type]
                PULSE_API_KEYS="bench-admin-key-0001=*")
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if api.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"the API did not get ready:\n"
                                   f"{(root / 'api.log').read_text()[-2000:]}")
            await asyncio.sleep(0.02)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)


def run_recovery(n: int, quick: bool) -> int:
    summary = Summary("recovery", quick)
    large = asyncio.run(measure(n, QUICK_CHECKPOINT_SECONDS if quick else CHECKPOINT_SECONDS))
    small = large if quick else asyncio.run(measure(max(n // 10, 1)))
    worker_ratio = large["worker_s"] / small["worker_s"]
    api_ratio = large["api_s"] / small["api_s"]
    summary.numbers.update({"events": n, "small": small, "large": large,
                            "worker_ratio": round(worker_ratio, 2),
                            "api_ratio": round(api_ratio, 2)})
    line = (f"worker whole again {large['worker_s']:.1f} s after kill -9 at {n / 1e6:g} M vs "
            f"{small['worker_s']:.1f} s at {n / 10e6:g} M = {worker_ratio:.2f}x; fresh API ready "
            f"in {large['api_s']:.1f} s vs {small['api_s']:.1f} s = {api_ratio:.2f}x (goal "
            f"{GOAL_RATIO}x, {GOAL_WORKER_S:g} s and {GOAL_API_S:g} s)")
    ok = large["worker_s"] <= FLOOR_S and large["api_s"] <= FLOOR_S
    return summary.finish(line, ok, f"{FLOOR_S:g} s")
