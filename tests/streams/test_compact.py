"""`pulse compact`: fewer files, the same answers, whatever runs beside it or kills it.

The planner is checked against a model of readers (every live file's rows, counted);
the command runs as users run it, over lakes written by a real worker (many small
flushes), beside a worker and a reader that keep going, and under kill -9.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse.api.groups import TOTAL
from pulse.api.lake import LakeReader
from pulse.api.sql import Lake
from pulse.benchmarks.harness import free_port
from pulse.lakefs import LakeStore, tenants
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.streams.compact_plan import Finality, Source, plan_merges
from pulse.streams.lake_sink import DeadLetter, Flush, LakeWriter
from tests.deployment import Pulse
from tests.streams.test_faults import READY, Producer
from tests.streams.test_pipeline import STEPS, make_stream


@pytest.fixture(autouse=True)
def lake_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lake's own compaction; with Iceberg in step it is tested in test_iceberg."""
    monkeypatch.setenv("PULSE_ICEBERG_CATALOG", "none")


ORDER = {"events": "tenant_id, id", "events_raw": "kafka_partition, kafka_offset, id",
         "dead_letters": "kafka_partition, kafka_offset, raw"}
SUMMARY = re.compile(r"(\d+) folders, (\d+) -> (\d+) files, ([\d.]+ \w+) -> ([\d.]+ \w+)")


def compact(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulse.cli", "compact", "--min-age", "0", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def files(root: str) -> dict[str, tuple[int, int]]:
    """Every Parquet file of the lake's events and dead letters (not its summaries):
    relative path -> (size, mtime_ns)."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet") and not os.path.relpath(folder, root).startswith(
                    lake.SUMMARIES):
                stat = os.stat(os.path.join(folder, name))
                out[os.path.relpath(os.path.join(folder, name), root)] = (
                    stat.st_size, stat.st_mtime_ns)
    return out


def temps(root: str) -> list[str]:
    return [os.path.join(folder, n) for folder, _, names in os.walk(root)
            for n in names if n.endswith(".tmp")]


def sql_answers(env: dict[str, str]) -> dict[str, list[str]]:
    """Every row of the three views, as `pulse sql --format json` prints them."""
    out = {}
    for view, order in ORDER.items():
        result = subprocess.run(
            [sys.executable, "-m", "pulse.cli", "sql", f"SELECT * FROM {view} ORDER BY {order}",
             "--format", "json"], env={**os.environ, **env}, capture_output=True, text=True,
            timeout=120)
        assert result.returncode == 0, result.stderr
        out[view] = result.stdout.splitlines()
    return out


def rows(session: Lake, query: str) -> list[tuple]:
    table = session.run(query)
    assert table is not None
    return [tuple(row.values()) for row in table.to_pylist()]


def answers(root: str) -> dict[str, list[tuple]]:
    """The same, in-process (fast enough for loops)."""
    session = Lake(root)
    try:
        return {view: rows(session, f"SELECT * FROM {view} ORDER BY {order}")
                for view, order in ORDER.items()}
    finally:
        session.close()


def per_source(rels: Iterable[str]) -> Counter[tuple[str, str, int]]:
    """How many files each (folder, epoch, partition) has."""
    out: Counter[tuple[str, str, int]] = Counter()
    for rel in rels:
        folder, name = os.path.split(rel)
        parsed = lake.parse_name(name)
        assert parsed is not None, rel
        out[(folder, parsed.epoch, parsed.partition)] += 1
    return out


def assert_compacted(root: str) -> None:
    """One file per folder, epoch and partition; merged files sorted, schema kept, zstd."""
    for rel in files(root):
        parsed = lake.parse_name(os.path.basename(rel))
        assert parsed is not None, rel
        if parsed.compacted:
            path = os.path.join(root, rel)
            table = pq.read_table(path, partitioning=None)
            schema = EVENT_SCHEMA if rel.startswith(lake.EVENTS) else DEAD_LETTER_SCHEMA
            assert table.schema.equals(schema), rel
            offsets = table.column("kafka_offset").to_pylist()
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), rel
            assert parsed.first <= offsets[0] and offsets[-1] <= parsed.last, rel
            meta = pq.ParquetFile(path).metadata
            assert meta.row_group(0).column(0).compression == "ZSTD", rel
    counts = per_source(files(root))
    assert set(counts.values()) == {1}, counts.most_common(3)


def summary_files(root: str) -> dict[str, tuple[int, int]]:
    """Every file of the lake's summaries: relative path -> (size, mtime_ns)."""
    out = {}
    for folder, _, names in os.walk(os.path.join(root, lake.SUMMARIES)):
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (
                stat.st_size, stat.st_mtime_ns)
    return out


def lake_answers_agree(root: str) -> int:
    """The API's lake answers (overview and funnel of all time) with summaries equal
    those read from the events alone; returns how many tenants have summaries."""
    store = LakeStore(root)
    readers = [LakeReader(store, 30.0, STEPS, use_summaries=use) for use in (True, False)]
    summarized = 0
    try:
        for tenant in tenants(store):
            got, want = (asyncio.run(_overview(reader, tenant)) for reader in readers)
            assert got == want, tenant
            summarized += readers[0].listing(tenant).summary is not None
    finally:
        for reader in readers:
            reader.close()
    return summarized


async def _overview(reader: LakeReader, tenant: str) -> tuple:
    everything = [(0, 4_000_000_000_000_000)]  # 1970 to 2096
    return (await reader.measures(tenant, None, everything, TOTAL),
            await reader.funnel(tenant, None, everything, TOTAL))


def summary(result: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout + result.stderr
    return int(match[1]), int(match[2]), int(match[3])


# ---- the planner, against a model of readers -----------------------------------------


def rows_seen(names: list[str], held: dict[str, frozenset[int]]) -> Counter[int]:
    """What a reader counts: every row of every live file."""
    seen: Counter[int] = Counter()
    for name in lake.live_files(names):
        seen.update(held[name])
    return seen


ranges = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6), st.booleans(),
                            st.booleans(), st.integers(0, 1)), max_size=14)


@given(ranges, st.frozensets(st.integers(0, 46)))
def test_a_merge_never_hides_or_doubles_a_row_at_any_step(specs, in_folder):
    """Files hold the offsets of their range that went to this folder; a merged file
    holds its sources' rows. After each rename and each delete, readers count the same."""
    sources: dict[str, Source] = {}
    final: dict[str, bool] = {}
    held: dict[str, frozenset[int]] = {}
    for first, length, compacted, is_final, partition in specs:
        source = Source(lake.LakeFile("ab", partition, first, first + length, compacted), 1, 0.0)
        sources[source.name] = source
        final[source.name] = is_final
        held[source.name] = in_folder & frozenset(range(first, first + length + 1))
    names = list(sources)
    live = set(lake.live_files(names))
    before = rows_seen(names, held)
    merges = plan_merges([s for s in sources.values() if s.name in live], lambda s: final[s.name])
    merged: set[str] = set()
    for merge in merges:
        assert len(merge.sources) >= 2 and all(final[s.name] for s in merge.sources)
        assert all(a.file.last < b.file.first
                   for a, b in zip(merge.sources, merge.sources[1:], strict=False))
        assert merged.isdisjoint(s.name for s in merge.sources)
        merged.update(s.name for s in merge.sources)
        held[merge.target.name] = frozenset().union(*(held[s.name] for s in merge.sources))
        names.append(merge.target.name)  # the rename: its sources are now covered
        assert rows_seen(names, held) == before
    for merge in merges:
        for source in merge.sources:  # then the deletes, one by one
            names.remove(source.name)
            assert rows_seen(names, held) == before


def test_which_files_are_final():
    def src(epoch: str, last: int, age: float, compacted: bool = False) -> Source:
        return Source(lake.LakeFile(epoch, 1, 0, last, compacted), 1, 1000.0 - age)

    known = Finality(1000.0, 60.0, "cur", {1: 100}, 60.0)
    assert known.final(src("old", 500, 61))
    assert not known.final(src("old", 500, 59))
    assert known.final(src("cur", 99, 61))
    assert not known.final(src("cur", 100, 61))  # not committed: a replay may rewrite it
    assert not known.final(src("cur", 5, 59))
    assert known.final(src("cur", 500, 0, compacted=True))
    assert not Finality(1000.0, 0.0, "cur", {}, 0.0).final(src("cur", 1, 5))
    unknown = Finality(1000.0, 60.0, "cur", None, 3600.0)
    assert unknown.final(src("old", 500, 61))
    assert not unknown.final(src("cur", 5, 3599))
    assert unknown.final(src("cur", 5, 3600))
    assert not Finality(1000.0, 60.0, None, None, 3600.0).final(src("old", 5, 3599))


# ---- without Kafka -------------------------------------------------------------------


def synthetic_lake(root: Path, epoch: str, tenants: int, days: int, flushes: int,
                   per_flush: int, partitions: int = 4, seed: int = 1) -> int:
    """Many small flushes over tenants x days folders, with duplicates and dead letters.

    Returns the number of files written.
    """
    rnd = random.Random(seed)
    now_us = time.time_ns() // 1000
    writer = LakeWriter(LakeStore(str(root)), epoch, "events")
    written = 0
    sent: list[bytes] = []
    for partition in range(partitions):
        offset = 0
        for _ in range(flushes):
            flush = Flush(partition, offset)
            for _ in range(per_flush):
                if sent and rnd.random() < 0.05:
                    raw = rnd.choice(sent)  # a producer retry
                elif rnd.random() < 0.01:
                    raw = b"{not json"
                else:
                    day = rnd.randrange(days)
                    raw = json.dumps({
                        "id": f"{epoch}-{len(sent)}", "tenant_id": f"t{rnd.randrange(tenants):02d}",
                        "event_type": "call_ended", "customer_id": "c", "value": 40,
                        "occurred_at": (now_us - day * 86_400_000_000) // 1000 - 1000,
                    }).encode()
                    sent.append(raw)
                _add(flush, raw, offset, now_us)
                offset += 1
            written += writer.write(flush)[0]
    return written


def _add(flush: Flush, raw: bytes, offset: int, now_us: int) -> None:
    decoded = decode_event(raw, now_us)
    flush.last = offset
    if isinstance(decoded, Event):
        flush.add_event(decoded, offset)
    else:
        flush.dead.setdefault(now_us // 86_400_000_000, []).append(
            DeadLetter(raw, decoded.reason, decoded.message, offset, now_us))


def test_without_kafka_only_earlier_epochs_are_merged(tmp_path: Path):
    root = tmp_path / "lake"
    synthetic_lake(root, "0a", tenants=2, days=2, flushes=4, per_flush=20)
    synthetic_lake(root, "0b", tenants=2, days=2, flushes=4, per_flush=20, seed=2)
    LakeWriter(LakeStore(str(root)), "0b", "events").write_intent(Flush(0, 80, 99))  # 0b is newest
    env = {"PULSE_LAKE": str(root), "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    before, want = files(str(root)), answers(str(root))

    dry = compact(env, "--dry-run")
    assert dry.returncode == 0 and "nothing changed" in dry.stdout
    assert "-c.parquet" in dry.stdout and files(str(root)) == before

    result = compact(env)
    assert result.returncode == 0, result.stderr
    assert "is not reachable" in result.stderr
    assert "epoch 0b (the newest, maybe still written) only files older than 3600 s" in (
        result.stderr)
    after = files(str(root))
    assert {r for r in before if "/0b-" in r} == {r for r in after if "/0b-" in r}
    old = per_source(r for r in after if "/0a-" in r)
    assert set(old.values()) == {1}  # one file per folder and partition
    assert sum(old.values()) < len([r for r in before if "/0a-" in r])
    assert answers(str(root)) == want


def test_an_unreadable_file_is_left_alone_and_said_so(tmp_path: Path):
    root = tmp_path / "lake"
    synthetic_lake(root, "0a", tenants=2, days=1, flushes=3, per_flush=20)
    LakeWriter(LakeStore(str(root)), "0b", "events").write_intent(Flush(0, 0, 1))
    victim = sorted(r for r in files(str(root)) if r.startswith("events/t"))[0]
    (root / victim).write_bytes(b"not parquet")
    env = {"PULSE_LAKE": str(root), "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    result = compact(env)
    assert result.returncode == 1
    assert "not merged, left as it is" in result.stderr and victim.split("/")[-1] in (
        result.stderr)
    assert "run pulse compact again" in result.stderr
    assert (root / victim).read_bytes() == b"not parquet"
    assert any(r.endswith("-c.parquet") for r in files(str(root)))


def test_stale_temp_files_go_fresh_ones_stay_and_one_compaction_runs_at_a_time(
        tmp_path: Path):
    root = tmp_path / "lake"
    synthetic_lake(root, "0a", tenants=1, days=1, flushes=3, per_flush=10)
    LakeWriter(LakeStore(str(root)), "0b", "events").write_intent(Flush(0, 0, 1))
    folder = root / "events" / os.listdir(root / "events")[0]
    folder = folder / os.listdir(folder)[0]
    stale, fresh = folder / ".x.parquet.1234abcd.tmp", folder / ".y.parquet.1234abcd.tmp"
    stale.write_bytes(b"half a file")
    fresh.write_bytes(b"a writer's file, about to be renamed")
    os.utime(stale, (time.time() - 61, time.time() - 61))
    env = {"PULSE_LAKE": str(root), "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    with open(root / "_pulse" / "compact.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = compact(env)
    assert busy.returncode == 1 and "another pulse compact is running" in busy.stderr
    assert stale.exists()
    result = compact(env)
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and fresh.exists()


# ---- over a worker's lake ------------------------------------------------------------


def produce_in_slices(pulse: Pulse, messages: list, slices: int, pause: float) -> None:
    step = -(-len(messages) // slices)
    for start in range(0, len(messages), step):
        pulse.produce(messages[start:start + step])
        time.sleep(pause)


def wait_for_rows(root: str, events: int, dead: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = {k: len(v) for k, v in answers(root).items() if k != "events"}
        if got == {"events_raw": events, "dead_letters": dead}:
            return
        assert time.monotonic() < deadline, f"the lake holds {got}, not {events}, {dead}"
        time.sleep(0.3)


@pytest.mark.broker
def test_compaction_keeps_every_answer_and_a_second_run_changes_nothing(pulse: Pulse):
    pulse.env["PULSE_LAKE_FLUSH_SECONDS"] = "0.2"
    root = pulse.settings.lake
    messages, valid, bad = make_stream(seed=31, n=3000, now_us=time.time_ns() // 1000)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    worker.wait_for_log(READY)
    produce_in_slices(pulse, messages, slices=10, pause=0.6)
    wait_for_rows(root, len(valid), len(bad))
    assert worker.stop() == 0  # SIGTERM: the last flushes are written and committed
    before, want = files(root), sql_answers(pulse.env)
    assert len(want["events"]) < len(want["events_raw"]) == len(valid)

    dry = compact(pulse.env, "--dry-run")
    assert dry.returncode == 0 and "nothing changed" in dry.stdout, dry.stderr
    assert files(root) == before

    first = compact(pulse.env)
    assert first.returncode == 0, first.stderr
    assert "only offsets the ingest group has committed" in first.stderr
    folders, n_before, n_after = summary(first)
    assert n_before == len(before) > n_after == len(files(root))
    print(f"\ncompaction of a worker's lake: {first.stdout.strip()}")
    assert sql_answers(pulse.env) == want
    assert_compacted(root)
    assert lake_answers_agree(root) > 0  # summaries written, and they agree

    after, summed = files(root), summary_files(root)
    second = compact(pulse.env)
    assert second.returncode == 0, second.stderr
    assert summary(second) == (folders, n_after, n_after)
    assert files(root) == after and summary_files(root) == summed
    assert sql_answers(pulse.env) == want


class Reader(threading.Thread):
    """Reads the lake over and over: every answer must hold every earlier row, once."""

    def __init__(self, root: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.reads = 0
        self.seen: dict[str, set[tuple[int, int]]] = {"events_raw": set(), "dead_letters": set()}
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        session = Lake(self.root)
        try:
            while not self.stopping.is_set():
                for view, seen in self.seen.items():
                    got = rows(session, f"SELECT kafka_partition, kafka_offset FROM {view}")
                    now = set(got)
                    assert len(now) == len(got), f"{view}: a row seen twice"
                    assert now >= seen, f"{view}: {len(seen - now)} rows went missing"
                    self.seen[view] = now
                self.reads += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            session.close()


@pytest.mark.broker
def test_readers_never_see_a_row_twice_or_miss_one_while_compacting(pulse: Pulse):
    pulse.env["PULSE_LAKE_FLUSH_SECONDS"] = "0.2"
    root = pulse.settings.lake
    messages, valid, bad = make_stream(seed=41, n=12_000, now_us=time.time_ns() // 1000)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    worker.wait_for_log(READY)
    producer = Producer(pulse, messages, seconds=25)
    reader = Reader(root)
    producer.start()
    reader.start()
    while not files(root):
        time.sleep(0.1)
    runs = merged = 0
    while producer.is_alive() or runs < 3:
        result = compact(pulse.env)
        assert result.returncode == 0, result.stderr
        _, n_before, n_after = summary(result)
        merged += n_before - n_after
        runs += 1
    producer.join()
    assert producer.error is None
    wait_for_rows(root, len(valid), len(bad))
    final = compact(pulse.env)
    assert final.returncode == 0, final.stderr
    time.sleep(1)
    reader.stopping.set()
    reader.join(30)
    assert reader.error is None, reader.error
    assert reader.reads > 20
    assert len(reader.seen["events_raw"]) == len(valid)
    assert len(reader.seen["dead_letters"]) == len(bad)
    assert merged > 0, "nothing was merged while the worker wrote"
    assert worker.alive() and "lake write failed" not in worker.log()
    assert worker.log().count(READY) == 1  # compact's offset reads never moved the group
    print(f"\nwhile writing: {runs} compactions, {merged} fewer files, {reader.reads} reads")


@pytest.mark.broker
def test_kill9_during_a_large_compaction_leaves_the_answers_and_a_rerun_finishes(
        pulse: Pulse):
    root = Path(pulse.settings.lake)
    written = synthetic_lake(root, "0dd", tenants=20, days=4, flushes=12, per_flush=120)
    pulse.ensure_topics()
    want = answers(str(root))
    rnd = random.Random(9)
    merged_files = []
    for attempt in range(3):
        proc = pulse.start("compact", "--min-age", "0", name=f"compact-{attempt}")
        proc.wait_for_log("pulse compact: merging", timeout=120)  # the work starts
        time.sleep(rnd.uniform(0.05, 0.9))
        assert proc.alive(), "the compaction finished before it was killed; make it larger"
        proc.kill9()
        assert answers(str(root)) == want, f"after kill {attempt + 1}"
        lake_answers_agree(str(root))
        merged_files.append(sum(1 for r in files(str(root)) if r.endswith("-c.parquet")))
    assert merged_files[-1] > 0

    for path in temps(str(root)):  # a killed run may leave temp files: make them stale
        os.utime(path, (time.time() - 120, time.time() - 120))
    result = compact(pulse.env)
    assert result.returncode == 0, result.stderr
    assert answers(str(root)) == want
    assert_compacted(str(root))
    assert temps(str(root)) == []
    _, n_before, n_after = summary(result)
    assert n_before > n_after  # the re-run finished the job
    print(f"\n{written} files, kill -9 x3 (merged files after each: {merged_files}), then: "
          f"{result.stdout.strip()}")
    again = compact(pulse.env)
    assert summary(again)[1:] == (n_after, n_after)
    assert answers(str(root)) == want
    assert lake_answers_agree(str(root)) == 20
