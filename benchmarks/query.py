"""`pulse bench query`: Pulse's lake-backed reports vs hand-written DuckDB, same files.

A lake of `n` events over 100 days and 3 tenants is generated directly (no broker; see
`benchmarks.lakegen`), with the many small files a running worker leaves. One
question is then asked both ways, warm, `runs` times each, alternating:

- Pulse: `Query.total` for one tenant and campaign over a 30-day range with unaligned
  edges, over an empty rollup store, so the whole range is answered by the lake: the
  overview's measures and intents (`LakeReader.measures`) and its funnel
  (`LakeReader.funnel`). The rollups are left out on purpose; they are not measured.
- hand-written: the SQL an analyst who knows DuckDB writes over the same files: the
  tenant's folder glob (hive date filter for the range), the same dedup rule (first
  copy of an id by kafka_partition, kafka_offset), one statement for the measures and
  intents and one for the funnel.

Both must give the same numbers (counts exactly, sums to 1e-9) before any timing.
Then `pulse compact` runs and everything is asked again: compaction is what turns
the worker's small files into few large ones (and writes the summaries that long
ranges and funnels read), and the ratio should hold on both. Last, a 90-day overview
and funnel at 1 and 4 clients, with the summaries and without (`benchmarks.query_long`).

With `--lake s3` the same files are also copied into an s3:// lake on a local S3
server (moto's `moto_server`) and Pulse asks it the same question, before and after
`pulse compact` (of the folder, copied again): its median over the folder's is the
number (goal <= 2x). DuckDB cannot read S3 here, so the baseline is Pulse over the
folder. Pulse's `LakeReader` is built as the API builds it: the tenant's listing cached
until a flush is reported, and on S3 the local cache of the lake's files
(`pulse.lakecache`), empty at first, so the first ask, reported apart, fetches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.fs as pafs

from pulse import lakecache
from pulse.api.lake import LakeReader, flushes_reported
from pulse.api.params import Range
from pulse.api.query import Query
from pulse.lakefs import LakeStore, lake_dirs, live
from pulse.rollups.store import RollupStore
from pulse.schemas import lake
from pulse.settings import Settings
from pulse.streams.compact import run_compact

from . import lakegen
from .harness import Summary, free_port, say
from .objstore import S3Server, start_s3
from .workload import HOUR_MS

GOAL = 1.2
FLOOR = 1.3
"""Raised toward what was reached (1.07x before compaction, insight answers at most
1.19x), with room for the hand-written side's own run-to-run spread on a shared VM."""
TENANT = "acme"
CAMPAIGN = "renewals"
HOUR_US = HOUR_MS * 1000
DAY_US = 24 * HOUR_US
MINUTE_US = 60_000_000


@dataclass(frozen=True)
class Question:
    """One tenant and campaign over [from_us, to_us)."""

    tenant: str
    campaign: str
    from_us: int
    to_us: int

    @property
    def dates(self) -> tuple[str, str]:
        """The first and last date folder the range touches."""
        first, last = self.from_us // DAY_US, (self.to_us - 1) // DAY_US
        return lake.day_to_date(first), lake.day_to_date(last)


def question(spec: lakegen.LakeSpec) -> Question:
    """30 days from 10:17:23.456789 to 15:42:07.123 (UTC), ten days after the lake starts."""
    first_day = spec.start_us // DAY_US + 10
    from_us = first_day * DAY_US + 10 * HOUR_US + 17 * MINUTE_US + 23_456_789
    to_us = (first_day + 30) * DAY_US + 15 * HOUR_US + 42 * MINUTE_US + 7_123_000
    return Question(TENANT, CAMPAIGN, from_us, to_us)


@dataclass(frozen=True)
class Numbers:
    """What the campaign overview shows: conversations, engagement, intents, funnel."""

    calls: int
    chats: int
    duration_s: float
    engaged: int
    intents: dict[str, int]
    funnel: dict[int, int]
    """Journeys with t1 in range by the step they reached (0 = the first step only)."""

    def differences(self, other: Numbers) -> list[str]:
        out = [f"{name}: {getattr(self, name)} != {getattr(other, name)}"
               for name in ("calls", "chats", "engaged", "intents", "funnel")
               if getattr(self, name) != getattr(other, name)]
        if not math.isclose(self.duration_s, other.duration_s, rel_tol=1e-9):
            out.append(f"duration_s: {self.duration_s!r} != {other.duration_s!r}")
        return out


# ---- the two ways to ask -------------------------------------------------------------


async def ask_pulse(query: Query, q: Question) -> Numbers:
    """The request's own code path, rollups left out (the store is empty)."""
    answer = await query.total(q.tenant, q.campaign, Range(q.from_us, q.to_us))
    if answer.source != "lake":
        raise RuntimeError(f"expected a lake-only answer, got source={answer.source}")
    m = answer.value
    return Numbers(m.calls, m.chats, m.duration_s, m.engaged,
                   {k: v for k, v in m.intents.items() if v},
                   {k: v for k, v in m.funnel.items() if v})


OVERVIEW_SQL = """
WITH e AS (
    SELECT event_type, channel, label, value
    FROM read_parquet($glob, hive_partitioning = true)
    WHERE campaign_id = $campaign AND occurred_at >= $from AND occurred_at < $to
      AND date BETWEEN $first_date::DATE AND $last_date::DATE
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY kafka_partition, kafka_offset) = 1
)
SELECT
    count(*) FILTER (WHERE event_type IN ('call_ended', 'chat_ended') AND channel = 'call'),
    count(*) FILTER (WHERE event_type IN ('call_ended', 'chat_ended') AND channel = 'chat'),
    coalesce(sum(value) FILTER (WHERE event_type IN ('call_ended', 'chat_ended')), 0),
    count(*) FILTER (WHERE event_type IN ('call_ended', 'chat_ended') AND value >= 30),
    histogram(label) FILTER (WHERE event_type = 'intent_detected')
FROM e"""

FUNNEL_SQL = """
WITH steps AS (
    SELECT customer_id, label, occurred_at
    FROM read_parquet($glob, hive_partitioning = true)
    WHERE event_type = 'funnel_step' AND campaign_id = $campaign
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY kafka_partition, kafka_offset) = 1
), journeys AS (
    SELECT min(occurred_at) FILTER (WHERE label = 'picked_up') AS t1,
           bool_or(label = 'interested') AS interested,
           bool_or(label = 'qualified') AS qualified
    FROM steps
    GROUP BY customer_id
)
SELECT CASE WHEN NOT interested THEN 0 WHEN NOT qualified THEN 1 ELSE 2 END AS reached,
       count(*)
FROM journeys
WHERE t1 >= $from AND t1 < $to
GROUP BY reached"""


class HandWritten:
    """Two statements over the tenant's folder glob, on a plain DuckDB connection."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.db = duckdb.connect()

    def ask(self, q: Question) -> Numbers:
        glob = f"{self.root}/{lake.tenant_dir(q.tenant)}/*/*.parquet"
        span = {"glob": glob, "campaign": q.campaign, "from": lake.us_to_datetime(q.from_us),
                "to": lake.us_to_datetime(q.to_us)}
        first_date, last_date = q.dates
        calls, chats, duration, engaged, intents = self.db.execute(
            OVERVIEW_SQL, {**span, "first_date": first_date, "last_date": last_date}).fetchone()
        funnel = dict(self.db.execute(FUNNEL_SQL, span).fetchall())
        return Numbers(calls, chats, float(duration), engaged, dict(intents or {}), funnel)

    def close(self) -> None:
        self.db.close()


# ---- timing --------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 20 runs is the 19th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Timing:
    answer: Any
    """What both ways answered (they agreed)."""
    pulse: list[float]
    hand: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.pulse) / statistics.median(self.hand)

    def numbers(self, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {f"{prefix}_ratio": round(self.ratio, 3)}
        for name, times in (("pulse", self.pulse), ("hand", self.hand)):
            out[f"{prefix}_{name}_median_ms"] = round(statistics.median(times) * 1000, 1)
            out[f"{prefix}_{name}_p95_ms"] = round(percentile(times, 0.95) * 1000, 1)
        return out

    def describe(self) -> str:
        return (f"Pulse {statistics.median(self.pulse) * 1000:,.0f} ms "
                f"(p95 {percentile(self.pulse, 0.95) * 1000:,.0f}) vs hand-written "
                f"{statistics.median(self.hand) * 1000:,.0f} ms "
                f"(p95 {percentile(self.hand, 0.95) * 1000:,.0f}) = {self.ratio:.2f}x")


async def clock(ask: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    numbers = await ask()
    return time.perf_counter() - started, numbers


def api_query(store: LakeStore, settings: Settings, timeout: float = 30.0,
              use_summaries: bool = True) -> tuple[Query, LakeReader]:
    """A `Query` over an empty rollup store and `store`, its `LakeReader` built as the API
    builds it (`api.app.create_app`): listings cached until a flush is reported (none
    is, here), and on object storage the local cache of `settings`; `use_summaries`
    off reads every event, as Pulse did before `pulse compact` summarized them."""
    rollups = RollupStore()
    reader = LakeReader(store, settings.engaged_seconds, settings.funnel_steps,
                        timeout=timeout, flushes=lambda: flushes_reported(rollups),
                        cache=lakecache.for_store(store, settings),
                        use_summaries=use_summaries)
    return Query(rollups, reader, settings.partitions), reader


async def measure(root: str, q: Question, runs: int, label: str) -> Timing:
    """Check both agree (on the warm-up), then time `runs` of each, alternating."""
    query, reader = api_query(LakeStore.open(root), Settings(lake=root))
    hand = HandWritten(root)

    async def by_hand() -> Numbers:
        return hand.ask(q)

    try:
        _, ours = await clock(lambda: ask_pulse(query, q))
        _, theirs = await clock(by_hand)
        wrong = ours.differences(theirs)
        if wrong:
            raise RuntimeError("Pulse and the hand-written query disagree: " + "; ".join(wrong))
        say(f"  {label}: both agree ({ours.calls + ours.chats:,} conversations, "
            f"{sum(ours.intents.values()):,} intents, {sum(ours.funnel.values()):,} journeys)")
        pulse_times: list[float] = []
        hand_times: list[float] = []
        for i in range(runs):
            pulse_times.append((await clock(lambda: ask_pulse(query, q)))[0])
            hand_times.append((await clock(by_hand))[0])
            if (i + 1) % 5 == 0 or i + 1 == runs:
                say(f"  {label}: {i + 1}/{runs} runs")
        return Timing(ours, pulse_times, hand_times)
    finally:
        reader.close()
        hand.close()


# ---- the run -------------------------------------------------------------------------


def live_files(root: str) -> int:
    return sum(len(live(folder, entries))
               for folder, entries in lake_dirs(LakeStore.open(root), lake.EVENTS).items())


def compact(root: str, settings: Settings | None = None) -> float:
    """`pulse compact` with no broker reachable, as an operator would run it; seconds.
    Iceberg is off: this is the lake's compaction, which the queries read."""
    settings = (settings or Settings()).replace(lake=root, iceberg_catalog="none",
                                                kafka_bootstrap=f"127.0.0.1:{free_port()}")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the summary line
        code = run_compact(settings, min_age=0, dry_run=False)
    if code != 0:
        raise RuntimeError(f"pulse compact exited with {code}")
    return time.perf_counter() - started


def run_query(n: int, runs: int, quick: bool, lake_kind: str = "folder") -> int:
    from . import query_long
    from .query_insights import measure_cases

    summary = Summary("query" if lake_kind == "folder" else f"query-{lake_kind}", quick)
    load_before = os.getloadavg()[0]
    end_us = (time.time_ns() // 1000 // HOUR_US - 2) * HOUR_US
    spec = lakegen.LakeSpec(n, end_us, days=query_long.LAKE_DAYS,
                            partitions=2 if quick else 8, flushes_per_day=1 if quick else 6)
    q = question(spec)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-query-") as root:
        say(f"pulse bench query: generating {n:,} events over {spec.days} days, "
            f"{len(lakegen.TENANTS)} tenants, {spec.partitions} partitions x "
            f"{spec.flushes_per_day} flushes a day")
        stats = lakegen.generate(LakeStore.open(root), spec, say)
        say(f"  {stats.files:,} files, {stats.bytes / 2**20:,.0f} MiB in {stats.seconds:.1f} s")
        files_before = live_files(root)
        if lake_kind == "s3":
            return _on_s3(summary, root, q, runs)
        before = asyncio.run(measure(root, q, runs, "before compaction"))
        say(f"  before compaction: {before.describe()}")
        compact_s = compact(root)
        files_after = live_files(root)
        after = asyncio.run(measure(root, q, runs, "after compaction"))
        say(f"  after compaction: {after.describe()}")
        say("  the insight answers, after compaction:")
        cases = asyncio.run(measure_cases(root, q, 1 if quick else runs, say))
        say("  90 days, by 1 and 4 clients, after compaction:")
        long = query_long.run(root, spec, 3 if quick else max(runs, 25))
    moved = before.answer.differences(after.answer)
    if moved:
        raise RuntimeError("pulse compact changed the answer: " + "; ".join(moved))
    worst = max(before.ratio, after.ratio)
    worst_case = max(cases, key=lambda name: cases[name].ratio)
    summary.numbers.update({
        "events": n, "unique_events": stats.unique, "runs": runs, "tenant": q.tenant,
        "campaign": q.campaign, "conversations": before.answer.calls + before.answer.chats,
        "intents": sum(before.answer.intents.values()),
        "journeys": sum(before.answer.funnel.values()),
        "from": lake.us_to_datetime(q.from_us).isoformat(),
        "to": lake.us_to_datetime(q.to_us).isoformat(), "generate_s": round(stats.seconds, 1),
        "lake_mb": round(stats.bytes / 2**20, 1), "files_before": files_before,
        "files_after": files_after, "compact_s": round(compact_s, 1),
        **before.numbers("before"), **after.numbers("after"),
        **{k: v for name, timing in cases.items() for k, v in timing.numbers(name).items()},
        **long.numbers(),
        "pulse_path": "Query.total (and the insight answers' Query methods) over an empty "
                      "rollup store (lake only)",
        "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    })
    long_line, long_ok = query_long.line(long)
    line = (f"{files_before:,} files: {before.describe()}; after compaction, "
            f"{files_after:,} files: {after.describe()}; {len(cases)} insight answers after "
            f"compaction, the slowest {worst_case} {cases[worst_case].ratio:.2f}x "
            f"(medians of {runs}, goal {GOAL}x; lake path only, rollups left out); "
            f"{long_line}")
    ok = max(worst, cases[worst_case].ratio) <= FLOOR and long_ok
    return summary.finish(line, ok, f"{FLOOR}x")


S3_GOAL = 2.0


async def time_pulse(store: LakeStore, q: Question, runs: int, label: str, state_dir: str
                     ) -> tuple[Numbers, float, list[float]]:
    """Pulse's answer over `store`, the time of that first (cold) ask, and the times of
    `runs` more; an S3 lake's local cache lives under `state_dir`, empty at first."""
    # No time limit that would end the measurement: the S3 server here (moto) is slow.
    query, reader = api_query(store, Settings(state_dir=state_dir), timeout=3600)
    try:
        first, answer = await clock(lambda: ask_pulse(query, q))
        times = [(await clock(lambda: ask_pulse(query, q)))[0] for _ in range(runs)]
        say(f"  {label}: first {first * 1000:,.0f} ms, then median "
            f"{statistics.median(times) * 1000:,.0f} ms")
        return answer, first, times
    finally:
        reader.close()


def _on_s3(summary: Summary, root: str, q: Question, runs: int) -> int:
    """The folder lake copied to S3, Pulse asked over both, before and after compaction
    (of the folder, then copied to a fresh bucket: the same files on both sides; a
    compaction run on the copy would leave the newest epoch's just-uploaded files
    alone, by their age)."""
    scratch = Path(tempfile.mkdtemp(prefix="pulse-bench-s3-"))
    server = start_s3(scratch)
    numbers: dict[str, Any] = {"runs": runs, "files_before": live_files(root)}
    try:
        ratios = []
        for stage in ("before", "after"):
            if stage == "after":
                numbers["compact_folder_s"] = round(compact(root), 1)
                numbers["files_after"] = live_files(root)
            s3, numbers[f"{stage}_upload_s"] = _upload(server, root)
            say(f"  copied the lake to {s3.uri('')} in {numbers[f'{stage}_upload_s']} s")
            folder, _, folder_times = asyncio.run(time_pulse(
                LakeStore.open(root), q, runs, f"folder, {stage} compaction", str(scratch)))
            on_s3, first, s3_times = asyncio.run(time_pulse(
                s3, q, runs, f"s3, {stage} compaction", str(scratch / f"state-{stage}")))
            wrong = on_s3.differences(folder)
            if wrong:
                raise RuntimeError("the S3 lake answers differently: " + "; ".join(wrong))
            ratio = statistics.median(s3_times) / statistics.median(folder_times)
            ratios.append(ratio)
            numbers.update({
                f"{stage}_ratio": round(ratio, 3),
                f"{stage}_folder_median_ms": round(statistics.median(folder_times) * 1000, 1),
                f"{stage}_s3_first_ms": round(first * 1000, 1),
                f"{stage}_s3_median_ms": round(statistics.median(s3_times) * 1000, 1),
                f"{stage}_s3_p95_ms": round(percentile(s3_times, 0.95) * 1000, 1)})
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    summary.numbers.update(numbers)
    line = (f"Pulse over an s3:// lake vs the same files in a folder: "
            f"{numbers['files_before']:,} files {numbers['before_s3_median_ms']:,.0f} ms vs "
            f"{numbers['before_folder_median_ms']:,.0f} ms = {ratios[0]:.2f}x; after "
            f"compaction ({numbers['files_after']:,} files) {numbers['after_s3_median_ms']:,.0f}"
            f" ms vs {numbers['after_folder_median_ms']:,.0f} ms = {ratios[1]:.2f}x (medians of "
            f"{runs}, goal <= {S3_GOAL}x; the first ask on S3, fetching the tenant's files, "
            f"{numbers['before_s3_first_ms']:,.0f} ms and {numbers['after_s3_first_ms']:,.0f} ms)")
    return summary.finish(line, max(ratios) <= S3_GOAL, f"{S3_GOAL}x")


def _upload(server: S3Server, root: str) -> tuple[LakeStore, float]:
    """The folder lake `root` copied into a fresh bucket; the seconds it took."""
    settings = server.settings(Settings(), server.new_lake())
    s3 = LakeStore.open(settings.lake, settings)
    started = time.perf_counter()
    pafs.copy_files(root, s3.arrow_path(""), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3.arrow_fs, use_threads=True)
    return s3, round(time.perf_counter() - started, 1)
