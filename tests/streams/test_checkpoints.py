"""Run for months: recovery from checkpoints, through real workers, API and broker.

Each scenario runs real `pulse worker` and `pulse api` processes with a checkpoint every
second, and ends by comparing every answer with the brute-force oracle:

- an API started after several checkpoints starts from them and answers exactly, and a
  worker restarted after kill -9 folds only the journal after its checkpoint;
- checkpoints that are truncated, corrupt, newer, or written under other definitions are
  skipped with a log line naming them, the previous one is used, and nothing is wrong;
- a journal that no longer holds what follows the checkpoints (here: recreated) makes
  the worker rebuild from the lake, and the API follow;
- kill -9 while a checkpoint is published and while a restarted worker folds the tail
  after one, and a stalled worker (SIGSTOP) racing the one that took its partitions:
  exact, and no checkpoint was ever published of a state the journal does not hold;
- one tenant on two workers: each partition and each worker does its share, exact across
  kill -9 of either, each restarted with its state folder lost (it is a cache).
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pulse.kafka import FETCH_MAX_WAIT_MS
from pulse.rollups import checkpoint, journal
from pulse.schemas.events import Event
from tests.api_process import overview_differences, start_api
from tests.deployment import Proc, Pulse, counters, read_all
from tests.streams.test_faults import READY, Producer, assert_exact
from tests.streams.test_pipeline import HOUR, make_stream

pytestmark = pytest.mark.broker

FAST = {"PULSE_CHECKPOINT_SECONDS": "1"}
TENANTS = ("acme", "globex", "initech")


def checkpoint_files(pulse: Pulse) -> dict[int, list[str]]:
    """Partition -> its checkpoint files, newest first."""
    out: dict[int, list[str]] = {}
    for path in glob.glob(os.path.join(pulse.settings.lake, "_pulse", "checkpoints", "*",
                                       "p*", "*.ckpt")):
        q = int(Path(path).parent.name[1:])
        out.setdefault(q, []).append(path)
    return {q: sorted(paths, reverse=True) for q, paths in out.items()}


def wait_for_checkpoints(pulse: Pulse, each: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        files = checkpoint_files(pulse)
        if len(files) == pulse.settings.partitions and all(
                len(paths) >= each for paths in files.values()):
            return
        assert time.monotonic() < deadline, f"checkpoints: {files}"
        time.sleep(0.2)


def valid_of(messages: list, now_us: int) -> list[Event]:
    from pulse.schemas.decode import decode_event
    return [e for e in (decode_event(v, now_us) for _, v, _ in messages) if isinstance(e, Event)]


def wide_ranges(now_us: int) -> list[tuple[int, int]]:
    base = now_us - now_us % HOUR
    return [(base - 80 * HOUR, base + 2 * HOUR), (base - 30 * HOUR - 17, base - 3 * HOUR + 5)]


def test_api_and_worker_start_from_checkpoints_and_skip_bad_ones(pulse: Pulse):
    pulse.env.update(FAST)
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=31, n=6000, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    for part in range(3):  # a few slices, a second apart: several checkpoints each
        pulse.produce(messages[part * 2000:(part + 1) * 2000])
        time.sleep(1.5)
    pulse.produce(messages[6000:])
    pulse.rollups(until=lambda s: counters(s).get("read", 0) >= len(messages))
    wait_for_checkpoints(pulse, each=2)
    assert all(len(paths) <= 3 for paths in checkpoint_files(pulse).values())  # collected

    api = start_api(pulse)
    assert not overview_differences(api, valid, TENANTS, wide_ranges(now_us))
    status, body = api.get("/analytics/status")
    assert status == 200
    for q, info in body["partitions"].items():
        assert info["replica_started_from_checkpoint"] is not None, (q, info)
        assert info["checkpoint_offset"] is not None and info["dedup_events"] > 0, (q, info)
        assert info["dedup_bytes_on_disk"] >= 20 * info["dedup_events"] - 20 * 65_536
    metrics = api.get_text("/metrics")
    assert re.search(r'^pulse_checkpoint_offset\{partition="0"\} \d', metrics, re.M)
    assert re.search(r'^pulse_dedup_bytes\{partition="0",where="memory"\} \d', metrics, re.M)

    # kill -9, then damage the newest checkpoints of three partitions and add a fourth's
    # "newer" and "other definitions" ones: the worker must fall back, never crash loop.
    worker.kill9()
    files = checkpoint_files(pulse)
    newest = {q: paths[0] for q, paths in files.items()}
    Path(newest[0]).write_bytes(Path(newest[0]).read_bytes()[:-40])
    damaged = bytearray(Path(newest[1]).read_bytes())
    damaged[-3] ^= 0xFF
    Path(newest[1]).write_bytes(bytes(damaged))
    spec = checkpoint.decode(Path(newest[2]).read_bytes(), _definitions(pulse), 2)
    for name, change in (("newer", {"format": checkpoint.FORMAT + 1}),
                         ("other", {"definitions": checkpoint.Definitions(
                             spec.definitions.funnel_steps, 99.0,
                             spec.definitions.retention_hours, spec.definitions.partitions)})):
        body = checkpoint.decode(Path(newest[2]).read_bytes(), _definitions(pulse), 2)
        for key, value in change.items():
            setattr(body, key, value)
        body.offset += 10_000 if name == "newer" else 20_000
        Path(newest[2]).with_name(checkpoint.file_name(body.offset, f"{name}000000")
                                  ).write_bytes(checkpoint.encode(body))

    more, _, _ = make_stream(seed=32, n=1500, now_us=now_us)
    more = [(k, v.replace(b'"evt-', b'"more-'), p) for k, v, p in more] + messages[:200]
    worker = pulse.start_worker()
    pulse.produce(more)
    assert_exact(pulse, messages + more, valid + valid_of(more, now_us), now_us)
    log = worker.log()
    assert re.search(r"checkpoint .*p0000/\S+ skipped: truncated", log), log[-3000:]
    assert re.search(r"checkpoint .*p0001/\S+ skipped: corrupt", log), log[-3000:]
    assert re.search(r"checkpoint .*p0002/\S+newer\S+ skipped: written by a newer Pulse", log)
    assert re.search(r"p0002/\S+other\S+ skipped: written under other definitions "
                     r"\(PULSE_ENGAGED_SECONDS 99.0 now 30.0\)", log), log[-3000:]
    folded = [int(n) for n in re.findall(r"claimed at journal offset \d+ \(session \w+\); "
                                         r"checkpoint at journal offset \d+, then folded "
                                         r"(\d+) records", log)]
    assert len(folded) == pulse.settings.partitions, log[-3000:]
    assert worker.alive() and log.count("Traceback") == 0


def _definitions(pulse: Pulse) -> checkpoint.Definitions:
    from pulse.checkpoint_store import rollup_spec
    return rollup_spec(pulse.settings).definitions()


def test_a_journal_that_no_longer_covers_the_checkpoints_is_rebuilt_from_the_lake(
        pulse: Pulse):
    """Tansu enforces no retention, so the journal's log start never moves there; a
    recreated journal topic is the same loss (the checkpoints' records are gone)."""
    pulse.env.update(FAST)
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=33, n=4000, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    pulse.produce(messages)
    pulse.rollups(until=lambda s: counters(s).get("read", 0) >= len(messages))
    wait_for_checkpoints(pulse)
    pulse.lake_rows(len(valid))
    assert worker.stop() == 0

    asyncio.run(_recreate(pulse))
    worker = pulse.start_worker()
    more, _, _ = make_stream(seed=34, n=1000, now_us=now_us)
    more = [(k, v.replace(b'"evt-', b'"more-'), p) for k, v, p in more]
    pulse.produce(more)
    everything = valid + valid_of(more, now_us)
    assert_exact(pulse, messages + more, everything, now_us)
    assert "no checkpoint fits the journal (it was recreated); rebuilding it from the lake" \
        in worker.log()
    api = start_api(pulse)
    assert not overview_differences(api, everything, TENANTS, wide_ranges(now_us))


async def _recreate(pulse: Pulse) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=pulse.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([pulse.topics.rollups])
    finally:
        await admin.close()
    await asyncio.sleep(1)
    from pulse.streams.broker import ensure_topics
    await ensure_topics(pulse.settings)


class Watch(threading.Thread):
    """Kill -9 a worker the moment a new checkpoint file or run appears in the lake."""

    def __init__(self, pulse: Pulse, kill: callable) -> None:
        super().__init__(daemon=True)
        self.pulse, self.kill = pulse, kill
        self.stopping = threading.Event()
        self.kills = 0

    def run(self) -> None:
        pattern = os.path.join(self.pulse.settings.lake, "_pulse", "checkpoints", "*", "p*",
                               "**", "*.*")
        seen = set(glob.glob(pattern, recursive=True))
        while not self.stopping.is_set() and self.kills < 2:
            now = set(glob.glob(pattern, recursive=True))
            if now - seen and self.kill():
                self.kills += 1
                time.sleep(4)
                now = set(glob.glob(pattern, recursive=True))
            seen = now
            time.sleep(0.01)


def test_kill9_mid_checkpoint_and_mid_tail_and_a_stalled_rival_stay_exact(pulse: Pulse):
    pulse.env.update(FAST)
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=35, n=20_000, now_us=now_us)
    pulse.ensure_topics()
    workers = {"a": pulse.start_worker("state-a"), "b": pulse.start_worker("state-b")}
    producer = Producer(pulse, messages, seconds=30)
    producer.start()
    for w in workers.values():
        w.wait_for_log(READY, timeout=90)

    def kill_a() -> bool:
        workers["a"].kill9()
        workers["a"] = pulse.start_worker("state-a")
        return True

    watch = Watch(pulse, kill_a)
    watch.start()
    watch.join(timeout=20)
    watch.stopping.set()
    # While the restarted worker folds the tail after its checkpoints.
    workers["a"].wait_for_log("then folded", timeout=90)
    kill_a()
    # A stalled rival: b stops long enough to lose its partitions, then wakes up.
    workers["a"].wait_for_log(READY, timeout=90)
    producer.join()
    assert producer.error is None
    b_log = len(workers["b"].log_path.read_bytes())
    os.kill(workers["b"].pid, signal.SIGSTOP)
    time.sleep(10)
    os.kill(workers["b"].pid, signal.SIGCONT)
    # b lost its partitions while stopped; once the group has settled again (b claimed
    # what it got back), a rival's claim lands between each owner's writes, as a claim
    # by a worker that took the partition while its owner stalled would: the owner must
    # notice at its next write and claim again rather than write (or checkpoint) a state
    # readers ignore.
    workers["b"].wait_for_log("claimed at journal offset", timeout=90, after=b_log)
    time.sleep(3)
    marks = {name: len(w.log_path.read_bytes()) for name, w in workers.items()}
    asyncio.run(_rival_claims(pulse))
    more, _, _ = make_stream(seed=37, n=2000, now_us=now_us)
    more = [(k, v.replace(b'"evt-', b'"rival-'), p) for k, v, p in more]
    pulse.produce(more)  # spread over every keyed partition: each owner writes again
    messages, valid = messages + more, valid + valid_of(more, now_us)
    assert_exact(pulse, messages, valid, now_us)
    assert watch.kills >= 1
    # Each partition is claimed again after its rival's claim: its owner noticed at its
    # next write, or (when the group rebalanced meanwhile) a claim came first.
    deadline = time.monotonic() + 30
    while unclaimed := _not_claimed_again(pulse, workers, marks):
        assert time.monotonic() < deadline, f"rival claims not noticed in {unclaimed}"
        time.sleep(0.5)
    latest = {q: [r for _, r in rs if isinstance(r, journal.Claim)][-1].session
              for q, rs in asyncio.run(_journal(pulse)).items()}
    assert not [q for q, session in latest.items() if session.startswith("rival-")]
    assert_every_checkpoint_is_the_journals(pulse)


def _not_claimed_again(pulse: Pulse, workers: dict[str, Proc], marks: dict[str, int]
                       ) -> list[int]:
    said = b"".join(w.log_path.read_bytes()[marks[n]:] for n, w in workers.items())
    return [q for q in range(pulse.settings.partitions)
            if f"keyed partition {q}: journal offset".encode() not in said
            and f"keyed partition {q}: claimed at journal offset".encode() not in said]


async def _rival_claims(pulse: Pulse) -> None:
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=pulse.settings.kafka_bootstrap,
                                enable_idempotence=False)
    await producer.start()
    try:
        for q in range(pulse.settings.partitions):
            await producer.send_and_wait(pulse.topics.rollups,
                                         journal.encode(journal.Claim(f"rival-{q}")), partition=q)
    finally:
        await producer.stop()


def assert_every_checkpoint_is_the_journals(pulse: Pulse) -> None:
    """No published checkpoint holds records a reader would ignore: between its writer's
    claim and its offset, the journal holds only that writer's records."""
    records = asyncio.run(_journal(pulse))
    for q, paths in checkpoint_files(pulse).items():
        for path in paths:
            body = checkpoint.decode(Path(path).read_bytes(), _definitions(pulse), q)
            claims = [(o, r.session) for o, r in records[q]
                      if isinstance(r, journal.Claim) and o <= body.offset]
            claimed_at, owner = claims[-1]
            assert owner == body.session, (q, path, claims[-3:])
            assert all(r.session == body.session
                       for o, r in records[q] if claimed_at <= o <= body.offset), (q, path)


async def _journal(pulse: Pulse) -> dict[int, list[tuple[int, journal.Record]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=pulse.settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                max_partition_fetch_bytes=32 * 1024 * 1024)
    await consumer.start()
    out: dict[int, list[tuple[int, journal.Record]]] = {}
    try:
        tps = [TopicPartition(pulse.topics.rollups, q) for q in range(pulse.settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while batches := await consumer.getmany(timeout_ms=1500):
            for tp, batch in batches.items():
                out.setdefault(tp.partition, []).extend(
                    (r.offset, journal.decode(r.value)) for r in batch)
        return out
    finally:
        await consumer.stop()


def keyed_owners(workers: dict[str, Proc]) -> dict[int, str]:
    """Keyed partition -> the worker whose claim is the latest in its journal (claims
    are journal writes: the higher offset is the later)."""
    latest: dict[int, tuple[int, str]] = {}
    for name, worker in workers.items():
        for q, offset in re.findall(r"keyed partition (\d+): claimed at journal offset (\d+)",
                                    worker.log()):
            latest[int(q)] = max(latest.get(int(q), (-1, "")), (int(offset), name))
    return {q: name for q, (_, name) in latest.items()}


def worker_shares(pulse: Pulse, workers: dict[str, Proc]) -> Counter[str]:
    """Events each worker counted, from the journal: its sessions' accepted counters."""
    sessions = {session: name for name, worker in workers.items() for session in
                re.findall(r"claimed at journal offset \d+ \(session (\w+)\)", worker.log())}
    shares: Counter[str] = Counter()
    for records in asyncio.run(_journal(pulse)).values():
        for _, record in records:
            if isinstance(record, journal.Delta) and record.counters.get("accepted"):
                shares[sessions[record.session[:12]]] += record.counters["accepted"]
    return shares


def test_one_tenant_spreads_over_partitions_and_workers_exact_across_kill9_of_either(
        pulse: Pulse):
    """One tenant's events: each keyed partition and each worker counts its share. Then
    each worker in turn is killed with -9 while events flow and comes back with its
    PULSE_STATE_DIR lost (deleted; corrupt dedup runs and filters): a cache, which the
    checkpoints in the lake bring back exactly."""
    pulse.env.update(FAST)
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=36, n=8000, now_us=now_us)
    messages = [(k, v.replace(b'"globex"', b'"acme"').replace(b'"initech"', b'"acme"'), p)
                for k, v, p in messages]
    valid = valid_of(messages, now_us)
    pulse.ensure_topics()
    workers = {"a": pulse.start_worker("state-a"), "b": pulse.start_worker("state-b")}
    for worker in workers.values():
        worker.wait_for_log(READY, timeout=90)
    deadline = time.monotonic() + 60
    while len(owners := keyed_owners(workers)) < pulse.settings.partitions or \
            set(owners.values()) != set(workers):
        assert time.monotonic() < deadline, f"keyed partitions not split: {owners}"
        time.sleep(0.2)

    head = messages[:3000]
    pulse.produce(head)
    store = pulse.rollups(until=read_all(len(head)))
    shares = Counter({q: info.counters["accepted"] for q, info in store.partitions.items()})
    even = sum(shares.values()) / pulse.settings.partitions
    assert all(abs(n - even) <= 0.2 * even for n in shares.values()), shares
    by_worker = worker_shares(pulse, workers)
    assert sum(by_worker.values()) == sum(shares.values())
    assert all(abs(n - sum(shares.values()) / 2) <= 0.2 * sum(shares.values()) / 2
               for n in by_worker.values()) and len(by_worker) == 2, by_worker

    producer = Producer(pulse, messages[3000:], seconds=10)
    producer.start()
    wait_for_checkpoints(pulse)
    workers["a"].kill9()
    shutil.rmtree(pulse.root / "state-a")
    workers["a"] = pulse.start_worker("state-a")
    time.sleep(5)
    workers["b"].kill9()
    damaged = [path for path in (pulse.root / "state-b" / "dedup").rglob("*")
               if path.suffix in (".run", ".bin")]
    assert damaged
    for path in damaged:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    workers["b"] = pulse.start_worker("state-b")
    producer.join()
    assert producer.error is None
    for worker in workers.values():  # both back in the group, their partitions recovered
        worker.wait_for_log("then folded", timeout=90)
    assert_exact(pulse, messages, valid, now_us)
    for name, worker in workers.items():
        log = worker.log()
        assert re.search(r"claimed at journal offset \d+ \(session \w+\); checkpoint at",
                         log), (name, log[-3000:])
        assert "rebuilding it from the lake" not in log and "Traceback" not in log, name
    # Whichever worker claimed a partition whose runs it lacks (deleted) or holds damaged
    # took the lake's copies: b may get its old partitions back, or a may take them.
    fetched = "dedup runs were not whole on this disk; fetched from the lake"
    assert any(fetched in worker.log() for worker in workers.values())
