"""The lake becomes unwritable mid-stream: nothing committed past it, failures reported,
nothing lost or doubled once it is writable again. Then the same for an S3 store that
answers too slowly or not at all (a paused server). A catalog that is down, which must
delay Iceberg commits only, is in tests/streams/test_iceberg.py.

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
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pulse.benchmarks.harness import free_port
from pulse.schemas.events import Event
from tests import oracle
from tests.api_process import Api, start_api
from tests.deployment import Pulse, counters, read_all
from tests.proxy import Proxy
from tests.s3 import S3Server, start_s3
from tests.streams.test_pipeline import make_stream
from tests.streams.test_replay import accounting

pytestmark = pytest.mark.broker
ADMIN = "admin-key-0001"


def committed_total(pulse: Pulse) -> int:
    async def go() -> int:
        s = pulse.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap,
                                    group_id=s.ingest_group, enable_auto_commit=False)
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
    first, second, first_valid, every = two_batches(41, 1500)
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


def two_batches(seed: int, n: int) -> tuple[list[tuple], list[tuple], list[Event], list[Event]]:
    """(first messages, second messages, the first's valid events, every valid event):
    the second batch's ids differ from the first's, so that its events count too."""
    now_us = time.time_ns() // 1000
    first, first_valid, first_bad = make_stream(seed=seed, n=n, now_us=now_us)
    second, second_valid, _ = make_stream(seed=seed + 1, n=n, now_us=now_us)
    second = [(k, v.replace(b'"evt-', b'"second-'), p) for k, v, p in second
              if v not in first_bad]
    renamed = [msgspec.structs.replace(e, id=e.id.replace("evt-", "second-", 1))
               for e in second_valid]
    return first, second, first_valid, first_valid + renamed


def wait_status(api: Api, ok: Callable[[dict], bool], what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.get("/analytics/status")
        if status == 200 and ok(body):
            return body
        assert time.monotonic() < deadline, f"{what}: {body.get('lake')}"
        time.sleep(0.3)


def assert_exact(pulse: Pulse, messages: int, every: list[Event]) -> None:
    """Every valid event in the lake once, at one offset; the rollups count each
    message once (the rest are dead letters)."""
    assert pulse.lake_rows(len(every), timeout=90) == len(every)
    (rows, places, ids), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), "
        "count(DISTINCT (tenant_id, id)) FROM {events}")
    assert (rows, places, ids) == (len(every), len(every), len(oracle.unique(every)))
    store = pulse.rollups(until=read_all(messages), timeout=90)
    unique = len(oracle.unique(every))
    assert accounting(store) == {"read": messages, "accepted": unique,
                                 "duplicates": len(every) - unique,
                                 "dead_letters": messages - len(every)}


def hold_back_and_catch_up(pulse: Pulse, fault: Callable[[], None],
                           repair: Callable[[], None], seed: int) -> None:
    """A store fault while events flow: nothing is committed past the lake, status,
    metrics and log say so, and after the repair nothing is lost or doubled."""
    first, second, _, every = two_batches(seed, 300)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    api = start_api(pulse)
    pulse.produce(first)
    deadline = time.monotonic() + 60
    while committed_total(pulse) < len(first):
        assert time.monotonic() < deadline, "the first batch was never committed"
        time.sleep(0.3)
    # The rollups too (the ingest process starts beside them, so the lake can be ahead):
    # they claim their partitions from checkpoints in the store, and a fault before
    # that holds them back, and with them the journal that carries the lake's status.
    api.wait_until_read(len(first))

    fault()
    pulse.produce(second)
    body = wait_status(api, lambda b: bool(b["lake"]["writes_failing"]),
                       "the failing lake writes were never reported")
    failing = body["lake"]["writes_failing"][0]
    assert body["lake"]["last_flush"][failing]["error"], body["lake"]
    assert re.search(r'^pulse_lake_write_failing\{partition="\d+"\} 1\.0$',
                     api.get_text("/metrics"), re.M)
    assert "lake write failed" in worker.log()
    assert committed_total(pulse) == len(first)  # nothing committed past the lake

    repair()
    assert_exact(pulse, len(first) + len(second), every)
    wait_status(api, lambda b: not b["lake"]["writes_failing"],
                "the recovered lake still reports failures")
    assert worker.alive()


def test_a_slow_s3_store_holds_ingest_back_and_loses_nothing(s3_pulse: Pulse, s3: S3Server):
    proxy = Proxy(s3.port)
    s3_pulse.env.update(AWS_ENDPOINT_URL_S3=proxy.endpoint, AWS_MAX_ATTEMPTS="1",
                        PULSE_ICEBERG_CATALOG="none")

    def slow() -> None:  # each forwarded chunk waits past the store's 10 s request timeout
        proxy.delay = 11.0

    def fast() -> None:
        proxy.delay = 0.0

    hold_back_and_catch_up(s3_pulse, slow, fast, seed=51)


def test_a_paused_s3_server_holds_ingest_back_and_loses_nothing(broker: str, tmp_path: Path):
    server = start_s3(tmp_path)  # a server of its own: SIGSTOP pauses everyone on it
    pulse = Pulse.on(broker, tmp_path, PULSE_LAKE=server.new_lake(), AWS_MAX_ATTEMPTS="1",
                     PULSE_ICEBERG_CATALOG="none", **server.env())
    try:
        hold_back_and_catch_up(pulse, server.pause, server.resume, seed=53)
    finally:
        pulse.stop_all()
        server.stop()
