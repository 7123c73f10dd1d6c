"""kill -9, restarts and rebalances while events flow: nothing lost, nothing twice."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka.errors import KafkaError

from pulse.rollups import report
from pulse.rollups.store import ALL
from tests import oracle
from tests.deployment import Pulse, counters, read_all
from tests.streams.test_pipeline import HOUR, STEPS, make_stream

pytestmark = pytest.mark.broker


class Producer(threading.Thread):
    """Produces `messages` in slices over `seconds`, like live traffic."""

    def __init__(self, pulse: Pulse, messages: list, seconds: float) -> None:
        super().__init__(daemon=True)
        self.pulse, self.messages, self.seconds = pulse, messages, seconds
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            slices = 40
            step = -(-len(self.messages) // slices)
            for i in range(0, len(self.messages), step):
                for attempt in range(20):  # the broker may be unreachable for a moment
                    try:
                        self.pulse.produce(self.messages[i : i + step])
                        break
                    except KafkaError:
                        if attempt == 19:
                            raise
                        time.sleep(0.5)
                time.sleep(self.seconds / slices)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def assert_exact(pulse: Pulse, messages: list, valid: list, now_us: int) -> None:
    store = pulse.rollups(until=read_all(len(messages)), timeout=120)
    unique = oracle.unique(valid)
    totals = counters(store)
    assert totals["read"] == len(messages)
    assert totals["accepted"] == len(unique)
    assert totals["duplicates"] == len(valid) - len(unique)
    base = now_us - now_us % HOUR
    frm, to = base - 80 * HOUR, base + 2 * HOUR
    for tenant in ("acme", "globex", "initech"):
        everything = store.total(tenant, ALL, frm // HOUR, to // HOUR)
        assert oracle.approx_equal(
            {**msgspec.to_builtins(report.overview(everything, STEPS)),
             "usage": report.usage(everything)},
            {**oracle.overview(valid, tenant, None, False, frm, to, STEPS, 30.0),
             "usage": oracle.usage_report(valid, tenant, frm, to)},
        ), tenant
    pulse.lake_rows(len(valid))
    (rows, offsets, ids), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), "
        "count(DISTINCT (tenant_id, id)) FROM {events}")
    assert (rows, offsets, ids) == (len(valid), len(valid), len(unique))


READY = "ingest reads input partitions"


def test_kill9_three_times_while_events_flow(pulse: Pulse):
    """Each kill lands at a random moment after the worker is reading (mid-batch,
    mid-flush or mid-commit), while the producer keeps sending."""
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=11, n=30_000, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    producer = Producer(pulse, messages, seconds=45)
    producer.start()
    rnd = random.Random(5)
    for _ in range(3):
        worker.wait_for_log(READY)
        time.sleep(rnd.uniform(0.3, 4))
        worker.kill9()
        worker = pulse.start_worker()
    producer.join()
    assert producer.error is None
    assert_exact(pulse, messages, valid, now_us)
    assert worker.alive()


def test_a_second_worker_joins_and_leaves_mid_stream(pulse: Pulse):
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=12, n=20_000, now_us=now_us)
    pulse.ensure_topics()
    first = pulse.start_worker("state-a")
    producer = Producer(pulse, messages, seconds=40)
    producer.start()
    first.wait_for_log(READY)
    second = pulse.start_worker("state-b")
    second.wait_for_log(READY)
    time.sleep(3)
    assert second.stop() == 0  # a clean leave (SIGTERM)
    third = pulse.start_worker("state-c")
    third.wait_for_log(READY)
    time.sleep(2)
    third.kill9()  # and a dirty one
    producer.join()
    assert producer.error is None
    assert_exact(pulse, messages, valid, now_us)
    assert first.alive()


def test_the_ingest_child_dies_with_its_worker_even_on_kill9(pulse: Pulse):
    """kill -9 of the worker's own pid (not its group) must leave no orphan consuming."""
    import os
    import signal

    pulse.ensure_topics()
    worker = pulse.start_worker()
    worker.wait_for_log(READY)
    with open(f"/proc/{worker.pid}/task/{worker.pid}/children") as fh:
        children = [int(pid) for pid in fh.read().split()]
    assert children, "the worker runs its ingest stage in a child process"
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait()
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in Path(f"/proc/{pid}/stat").read_text()
              .split(")")[1].split()[0] for pid in children):
        assert time.monotonic() < deadline, "the ingest child outlived its worker"
        time.sleep(0.1)


def test_a_killed_ingest_child_is_started_again_and_nothing_is_lost(pulse: Pulse):
    """kill -9 of the ingest child alone: the worker starts another, which reads on from
    the last commit; rollups and lake stay exact. Having counted them, the rollup process
    has still not loaded pyarrow (about 50 MiB), and the ingest child runs Arrow on the
    C library's allocator."""
    import os
    import signal

    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=17, n=2000, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    worker.wait_for_log(READY)
    producer = Producer(pulse, messages, seconds=6)
    producer.start()
    time.sleep(2)
    with open(f"/proc/{worker.pid}/task/{worker.pid}/children") as fh:
        (child,) = [int(pid) for pid in fh.read().split()]
    os.kill(child, signal.SIGKILL)
    worker.wait_for_log("the ingest process exited (code -9); restarting it")
    producer.join()
    assert producer.error is None
    assert_exact(pulse, messages, valid, now_us)
    with open(f"/proc/{worker.pid}/task/{worker.pid}/children") as fh:
        (again,) = [int(pid) for pid in fh.read().split()]
    assert again != child
    assert "libarrow" not in Path(f"/proc/{worker.pid}/maps").read_text()
    assert "libarrow" in Path(f"/proc/{again}/maps").read_text()
    assert b"ARROW_DEFAULT_MEMORY_POOL=system" in Path(f"/proc/{again}/environ").read_bytes()
