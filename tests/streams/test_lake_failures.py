"""The lake becomes unwritable mid-stream: nothing committed past it, failures reported,
nothing lost or doubled once it is writable again.

The tests run as root, for whom permissions do not stop writes, so the lake's
`events/` folder is swapped for a plain file: every event file's folder then fails to
be created, as with a read-only or vanished mount.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests import oracle
from tests.helpers import Pulse, counters, free_port, read_all
from tests.streams.test_pipeline import make_stream

pytestmark = pytest.mark.broker
ADMIN = "admin-key-0001"


def committed_total(pulse: Pulse) -> int:
    async def go() -> int:
        s = pulse.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap,
                                    group_id=f"{s.group}-ingest", enable_auto_commit=False)
        await consumer.start()
        try:
            return sum([await consumer.committed(TopicPartition(s.topic, p)) or 0
                        for p in range(s.partitions)])
        finally:
            await consumer.stop()
    return asyncio.run(go())


def get(url: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_an_unwritable_lake_holds_commits_reports_and_catches_up(pulse: Pulse):
    now_us = time.time_ns() // 1000
    first, first_valid, first_bad = make_stream(seed=41, n=1500, now_us=now_us)
    second, second_valid, _ = make_stream(seed=42, n=1500, now_us=now_us)
    second = [(k, v.replace(b'"evt-', b'"second-'), p) for k, v, p in second
              if v not in first_bad]
    port = free_port()
    pulse.ensure_topics()
    worker = pulse.start_worker()
    pulse.start("api", PULSE_API_PORT=str(port), PULSE_API_KEYS=f"{ADMIN}=*")
    pulse.produce(first)
    pulse.rollups(until=read_all(len(first)))
    assert pulse.lake_rows(len(first_valid)) == len(first_valid)
    in_lake_before = committed_total(pulse)
    assert in_lake_before == len(first)

    events = os.path.join(pulse.settings.lake, "events")
    os.rename(events, events + ".away")
    with open(events, "w") as fh:
        fh.write("not a folder")

    pulse.produce(second)
    store = pulse.rollups(until=read_all(len(first) + len(second)))  # rollups stay fresh
    assert counters(store)["read"] == len(first) + len(second)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while '"writes_failing":[]' in get(f"{url}/analytics/status"):
        assert time.monotonic() < deadline, "the failing lake writes were never reported"
        time.sleep(0.3)
    status = get(f"{url}/analytics/status")
    assert "NotADirectoryError" in status or "FileExistsError" in status, status
    assert "pulse_lake_write_failing{partition=" in get(f"{url}/metrics")
    time.sleep(2)
    assert committed_total(pulse) == in_lake_before  # nothing committed past the lake
    assert worker.alive()

    os.remove(events)
    os.rename(events + ".away", events)
    every = first_valid + [e for e in second_valid if e.id.startswith("second-")]
    assert pulse.lake_rows(len(every), timeout=120) == len(every)
    (rows, offsets, ids), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), "
        "count(DISTINCT (tenant_id, id)) FROM {events}")
    assert (rows, offsets, ids) == (len(every), len(every), len(oracle.unique(every)))
    deadline = time.monotonic() + 30
    while committed_total(pulse) < len(first) + len(second):
        assert time.monotonic() < deadline, "offsets were not committed after the repair"
        time.sleep(0.3)
    while '"writes_failing":[]' not in get(f"{url}/analytics/status"):
        assert time.monotonic() < deadline, "the recovered lake still reports failures"
        time.sleep(0.3)
    assert re.search(r'"write_failures":[1-9]', get(f"{url}/analytics/status"))
    assert not any(name.endswith(".tmp") for _, _, names in os.walk(pulse.settings.lake)
                   for name in names)
