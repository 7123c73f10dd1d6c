"""`pulse bench ingest`: one worker against a bare aiokafka drain of the same topic.

The same messages (5 % exact duplicates, a few invalid) are produced once; then (a) a
plain `getmany()` loop reads them all, and (b) one `pulse worker`, from empty state,
runs until every message is in the rollups and durable in the lake. The worker's clock
starts when its ingest stage has joined its group, as the drain's starts at its first
fetch: group joins cost the same to both and measure the broker, not the pipeline.

With `--lake s3` a second worker (a group of its own) then ingests the same topic into
an s3:// lake on a local S3 server (moto's `moto_server`), beside the folder run: its
rate over the folder's is the number (goal >= 0.8).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.kafka import CLIENT_DEFAULTS, FETCH_MAX_WAIT_MS
from pulse.lakefs import LakeStore, lake_dirs, live
from pulse.rollups import journal
from pulse.rollups.store import RollupStore
from pulse.schemas import lake
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .harness import (
    Summary,
    bench_settings,
    broker,
    cpu_seconds,
    ingest_child,
    listener_pid,
    rss_mb,
    say,
    spawn,
)
from .workload import events, produce

FLOOR = 0.3
GOAL = 0.5
STAGES = ("ingest", "rollup", "broker")
"""The processes a worker's messages cost CPU in: its ingest child, its Faust (rollup)
process and the broker."""


async def drain(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds for a bare getmany() loop to read `expected` messages."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024, **CLIENT_DEFAULTS)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            seen += sum(len(records) for records in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def lake_rows(store: LakeStore, known: dict[str, int] | None = None
              ) -> tuple[int, int, int, int]:
    """(event rows, dead-letter rows, files, bytes) of the live lake files; `known`
    keeps each file's row count between calls (a name's rows never change), so that
    polling an S3 lake does not re-read every footer."""
    rows = [0, 0]
    files = size = 0
    known = {} if known is None else known
    for folder, entries in lake_dirs(store).items():
        sizes = {e.name: e.size for e in entries}
        for rel in live(folder, entries):
            if rel not in known:
                known[rel] = pq.read_metadata(store.arrow_path(rel),
                                              filesystem=store.arrow_fs).num_rows
            rows[folder.kind == lake.DEAD_LETTERS] += known[rel]
            files += 1
            size += sizes[rel.rpartition("/")[2]]
    return rows[0], rows[1], files, size


class JournalWatch:
    """Follows the journal's counters, as an API replica would fold them, to see when the
    rollups are complete; with `answers`, folds the whole journal into `store` as well.

    Without `answers` it decodes only each record's head (`journal.decode_head`): a full
    fold spends a good part of one of the machine's two cores beside the worker it
    measures."""

    def __init__(self, settings: Settings, answers: bool = False) -> None:
        self.settings = settings
        self.store = RollupStore() if answers else None
        self.folds: dict[int, journal.JournalFold[journal.DeltaHead]] = {}
        self.counters: dict[int, Counter[str]] = {}
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topic = Topics.of(self.settings).rollups
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                         enable_auto_commit=False,
                                         max_partition_fetch_bytes=32 * 1024 * 1024,
                                         fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                         **CLIENT_DEFAULTS)
        await self.consumer.start()
        tps = [TopicPartition(topic, q) for q in range(self.settings.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def poll(self) -> dict[str, int]:
        assert self.consumer is not None
        for tp, records in (await self.consumer.getmany(timeout_ms=100)).items():
            fold = self.folds.get(tp.partition)
            if fold is None:
                counts = self.counters[tp.partition] = Counter()
                fold = self.folds[tp.partition] = journal.JournalFold(_Counting(counts))
            for record in records:
                fold.feed(journal.decode_head(record.value), record.offset)
            if self.store is not None:
                full = self.store.fold(tp.partition)
                for record in records:
                    full.feed(journal.decode(record.value), record.offset)
        totals: Counter[str] = Counter()
        for counts in self.counters.values():
            totals.update(counts)
        return dict(totals)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


@dataclass
class _Counting:
    counters: Counter[str]

    def apply_delta(self, delta: journal.DeltaHead) -> None:
        self.counters.update(delta.counters)


@asynccontextmanager
async def running_worker(settings: Settings, root: Path, env: dict[str, str] | None = None,
                         answers: bool = False) -> AsyncIterator[Worker]:
    """A `pulse worker` whose ingest stage has joined its group, with a journal watch."""
    log = root / f"worker-{settings.group}.log"
    worker = Worker(spawn(["worker"], settings, log, **(env or {})),
                    JournalWatch(settings, answers), log)
    await worker.watch.start()
    try:
        while b"ingest reads input partitions" not in log.read_bytes():
            worker.check()
            await asyncio.sleep(0.05)
        yield worker
    finally:
        await worker.watch.stop()
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGTERM)
            worker.process.wait(120)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    watch: JournalWatch
    log: Path

    def check(self) -> None:
        """Raise with the end of its log if the worker has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{self.log.read_text()[-2000:]}")


async def run_worker(settings: Settings, root: Path, expected: dict[str, int],
                     timeout: float, env: dict[str, str] | None = None) -> dict[str, float]:
    async with running_worker(settings, root, env) as worker:
        watch = worker.watch
        store = LakeStore.open(settings.lake, settings)
        known: dict[str, int] = {}
        stages = {"ingest": ingest_child(worker.process.pid), "rollup": worker.process.pid,
                  "broker": listener_pid(settings.kafka_bootstrap)}
        cpu = {name: cpu_seconds(pid) for name, pid in stages.items()}
        started = time.perf_counter()
        deadline = started + timeout
        rollups_done = lake_done = None
        last_report = started
        while rollups_done is None or lake_done is None:
            totals = await watch.poll()
            now = time.perf_counter()
            if rollups_done is None and totals.get("read", 0) >= expected["read"]:
                rollups_done = now - started
            if lake_done is None and (now - last_report > 1 or rollups_done is not None):
                events_in_lake, dead_in_lake, _, _ = lake_rows(store, known)
                if (events_in_lake, dead_in_lake) == (expected["valid"], expected["dead"]):
                    lake_done = now - started
            if now - last_report > 2:
                say(f"  worker: {totals.get('read', 0):,}/{expected['read']:,} in rollups "
                    f"after {now - started:.1f} s")
                last_report = now
            if now > deadline:
                raise RuntimeError(f"the worker did not finish in {timeout:.0f} s: {totals}")
        for name, pid in stages.items():
            cpu[name] = cpu_seconds(pid) - cpu[name]
        child = stages["ingest"]
        rss = rss_mb(worker.process.pid, "VmHWM") + (rss_mb(child, "VmHWM") if child else 0.0)
        assert totals.get("accepted") == expected["unique"], totals
        assert totals.get("duplicates", 0) == expected["valid"] - expected["unique"], totals
        assert totals.get("dead_letters", 0) == expected["dead"], totals
        return {"rollups_s": rollups_done, "lake_s": lake_done, "rss_mb": rss,
                **{f"cpu_{name}_s": seconds for name, seconds in cpu.items()}}


def count(messages: list[tuple[bytes, bytes]]) -> dict[str, int]:
    now_us = time.time_ns() // 1000
    valid = unique = dead = 0
    seen: set[tuple[str, str]] = set()
    for _, value in messages:
        result = decode_event(value, now_us)
        if isinstance(result, Event):
            valid += 1
            key = (result.tenant_id, result.id)
            if key not in seen:
                seen.add(key)
                unique += 1
        else:
            dead += 1
    return {"read": len(messages), "valid": valid, "unique": unique, "dead": dead}


def run_ingest(n: int, quick: bool, lake: str = "folder") -> int:
    summary = Summary("ingest" if lake == "folder" else f"ingest-{lake}", quick)
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root)
        from pulse.streams.broker import ensure_topics

        asyncio.run(ensure_topics(settings))
        say(f"pulse bench ingest: generating {n:,} messages")
        messages = list(events(n))
        expected = count(messages)
        produced = asyncio.run(produce(bootstrap, settings.topic, iter(messages), n))
        say(f"  produced in {produced:.1f} s ({n / produced:,.0f}/s)")
        drained = asyncio.run(drain(bootstrap, settings.topic, n))
        say(f"  bare getmany() drain: {drained:.2f} s ({n / drained:,.0f}/s)")
        worker = asyncio.run(run_worker(settings, root, expected, timeout=max(120, n / 5000)))
        _, _, files, size = lake_rows(LakeStore.open(settings.lake, settings))
        if lake == "s3":
            return _on_s3(summary, settings, root, expected, n, worker)
    seconds = max(worker["rollups_s"], worker["lake_s"])
    rate, base = n / seconds, n / drained
    ratio = rate / base
    summary.numbers.update({
        "messages": n, "drain_per_s": round(base), "worker_per_s": round(rate),
        "ratio": round(ratio, 3), "worker_rollups_s": round(worker["rollups_s"], 2),
        "worker_lake_s": round(worker["lake_s"], 2), "worker_peak_rss_mb": round(worker["rss_mb"]),
        "lake_files_per_million": round(files / n * 1e6),
        "lake_mb_per_million": round(size / n, 1), **expected,
        **{f"{stage}_cpu_us_per_msg": round(worker[f"cpu_{stage}_s"] / n * 1e6, 2)
           for stage in STAGES},
    })
    line = (f"worker {rate:,.0f} msg/s vs bare drain {base:,.0f} msg/s = {ratio:.2f}x "
            f"(goal {GOAL}x); rollups {worker['rollups_s']:.1f} s, lake {worker['lake_s']:.1f} s; "
            f"{files / n * 1e6:,.0f} files and {size / n:,.1f} MB per million; "
            f"peak RSS {worker['rss_mb']:,.0f} MiB (worker and its ingest process); CPU per "
            "message " + ", ".join(f"{stage} {worker[f'cpu_{stage}_s'] / n * 1e6:.1f} us"
                                   for stage in STAGES))
    return summary.finish(line, ratio >= FLOOR, f"{FLOOR}x")


S3_GOAL = 0.8


def _on_s3(summary: Summary, folder: Settings, root: Path, expected: dict[str, int], n: int,
           on_folder: dict[str, float]) -> int:
    """The same topic again, into an s3:// lake, by a worker of a group of its own."""
    from .objstore import start_s3

    server = start_s3(root)
    try:
        group = f"{folder.group}-s3"
        settings = server.settings(folder.replace(group=group), server.new_lake())
        say(f"  the same messages into {settings.lake} (moto_server on {server.endpoint})")
        worker = asyncio.run(run_worker(settings, root, expected, timeout=max(180, n / 2000),
                                        env={"PULSE_GROUP": group, **server.env()}))
        _, _, files, size = lake_rows(LakeStore.open(settings.lake, settings))
    finally:
        server.stop()
    folder_rate = n / max(on_folder["rollups_s"], on_folder["lake_s"])
    rate = n / max(worker["rollups_s"], worker["lake_s"])
    ratio = rate / folder_rate
    summary.numbers.update({
        "messages": n, "folder_per_s": round(folder_rate), "s3_per_s": round(rate),
        "ratio": round(ratio, 3), "s3_lake_s": round(worker["lake_s"], 2),
        "folder_lake_s": round(on_folder["lake_s"], 2), "s3_files": files,
        "s3_mb": round(size / 2**20, 1), "s3_worker_peak_rss_mb": round(worker["rss_mb"]),
    })
    line = (f"worker into an s3:// lake {rate:,.0f} msg/s vs into a folder {folder_rate:,.0f} "
            f"msg/s = {ratio:.2f}x (goal {S3_GOAL}x); lake {worker['lake_s']:.1f} s vs "
            f"{on_folder['lake_s']:.1f} s; {files} files, {size / 2**20:,.1f} MiB")
    return summary.finish(line, ratio >= S3_GOAL, f"{S3_GOAL}x")
