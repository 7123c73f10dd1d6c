"""Pulse's row of `pulse bench peers`: one `pulse worker`, its RSS, its answer.

The worker runs exactly as in `pulse bench ingest` (`ingest.run_worker`: from empty
state until every message is in the rollups and every event durable in the lake).
Its answer is the rollup journal folded into a `RollupStore`, as an API replica
folds it, reduced to the counts every peer computes. Its peak RSS is that of the
worker's whole process tree (the Faust process and its ingest child), sampled while
it runs, since the peers' jobs are one process each and Pulse's is two.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

from pulse.settings import Settings

from .harness import rss_mb, say
from .ingest import JournalWatch, run_worker
from .peers_answer import Answer, Outcome, compare


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return parents


def _tree_peak_rss_mb(root_pid: int) -> float:
    """Sum of VmHWM over `root_pid` and its descendants."""
    parents = _parents()
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss_mb(pid, "VmHWM") for pid in tree)


def _worker_pid() -> int | None:
    """The `pulse worker` child of this process (`run_worker` does not say its pid)."""
    me = os.getpid()
    for pid, parent in _parents().items():
        if parent != me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"pulse.cli" in argv and b"worker" in argv:
            return pid
    return None


async def _sample_rss(peak: list[float]) -> None:
    while True:
        pid = _worker_pid()
        if pid is not None:
            peak[0] = max(peak[0], _tree_peak_rss_mb(pid))
        await asyncio.sleep(0.5)


async def pulse_answer(settings: Settings, expected_read: int, timeout: float) -> Answer:
    """The worker's rollups as an API replica folds them, reduced to the peers' counts."""
    watch = JournalWatch(settings, answers=True)
    await watch.start()
    try:
        deadline = time.monotonic() + timeout
        while (await watch.poll()).get("read", 0) < expected_read:
            if time.monotonic() > deadline:
                raise RuntimeError("the journal did not show every message again")
        campaigns: Counter[tuple[Any, ...]] = Counter()
        intents: Counter[tuple[Any, ...]] = Counter()
        for tenant, campaign, hour, m in watch.store.buckets():
            if m.events:
                campaigns[(tenant, campaign, hour)] += m.events
            for label, k in m.intents.items():
                intents[(tenant, label, hour)] += k
        return Answer({k: v for k, v in campaigns.items() if v},
                      {k: v for k, v in intents.items() if v})
    finally:
        await watch.stop()


async def _run(settings: Settings, root: Path, expected: dict[str, int],
               timeout: float) -> tuple[dict[str, float], float, Answer]:
    peak = [0.0]
    sampler = asyncio.create_task(_sample_rss(peak))
    try:
        worker = await run_worker(settings, root, expected, timeout)
    finally:
        sampler.cancel()
    answer = await pulse_answer(settings, expected["read"], timeout)
    return worker, max(peak[0], worker["rss_mb"]), answer


def run_pulse(settings: Settings, root: Path, expected: dict[str, int], n: int,
              truth: Answer) -> Outcome:
    """Pulse's row; a failure is reported in the row (the caller decides the exit code)."""
    outcome = Outcome("pulse", f"Pulse {metadata.version('campaign-pulse')} (rollups + lake)")
    say("  Pulse: one `pulse worker`")
    try:
        worker, rss, answer = asyncio.run(
            _run(settings, root, expected, timeout=max(120, n / 5000)))
    except (RuntimeError, AssertionError, OSError) as exc:
        outcome.note = f"failed: {exc}"[:300]
        return outcome
    outcome.rollups_s = worker["rollups_s"]
    outcome.seconds = max(worker["rollups_s"], worker["lake_s"])
    outcome.rate = n / outcome.seconds
    outcome.rss_mb = rss
    outcome.exact, differs = compare(truth, answer)
    outcome.note = "; ".join(filter(None, [
        f"rollups complete after {worker['rollups_s']:.1f} s ({n / worker['rollups_s']:,.0f}/s), "
        f"lake after {worker['lake_s']:.1f} s", differs]))
    return outcome
