"""An s3:// lake, end to end, against a real S3 server process (moto) and broker.

One combined case, so that the slow parts run once (the folder lake has the same
checks one by one in test_pipeline, test_sql, test_compact, test_replay and the fault
tests): a worker killed with -9 half way, restarted; its path to the store cut by a TCP
proxy while events flow (ingest holds back, status, metrics and the log say so) and
restored; the lake then holds every valid event exactly once (read by pyarrow's own
discovery, not Pulse's listing); `pulse sql`, the API's lake-backed answers, `pulse
compact` and `pulse replay` all agree with the oracle, on S3. Iceberg is on (a sqlite
catalog, the tables' metadata in the bucket): after the kill, the cut and the
compaction, the tables hold every live file exactly once, and a second engine
(pyiceberg's scan into DuckDB) counts the rows of `events_raw` and `events`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from pulse import lakefs
from pulse.lakefs import LakeStore
from pulse.streams import iceberg
from tests import oracle
from tests.api_process import overview_differences, start_api
from tests.deployment import Pulse, counters, read_all
from tests.proxy import Proxy
from tests.s3 import S3Server
from tests.streams.test_iceberg import table_counts, table_paths
from tests.streams.test_pipeline import HOUR, make_stream
from tests.streams.test_replay import accounting, answers

pytestmark = pytest.mark.broker

EVENTS_QUERY = "SELECT tenant_id, id, kafka_partition, kafka_offset FROM events ORDER BY ALL"


def pulse_sql(pulse: Pulse, query: str) -> list[tuple]:
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "sql", query, "--format", "json"],
                            env=pulse.full_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [tuple(json.loads(line).values()) for line in result.stdout.splitlines()]


def wait_for_status(api, failing: bool, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.get("/analytics/status")
        if status == 200 and bool(body["lake"]["writes_failing"]) == failing:
            return body
        assert time.monotonic() < deadline, f"lake writes failing != {failing}: {body}"
        time.sleep(0.3)


def test_a_worker_sql_api_compact_and_replay_on_an_s3_lake(s3_pulse: Pulse, s3: S3Server):
    pulse = s3_pulse
    now_us = time.time_ns() // 1000
    messages, valid, bad = make_stream(seed=31, n=3000, now_us=now_us)
    pulse.ensure_topics()
    proxy = Proxy(s3.port)
    pulse.env.update(AWS_ENDPOINT_URL_S3=proxy.endpoint, AWS_MAX_ATTEMPTS="1",
                     PULSE_ICEBERG_CATALOG=f"sqlite:///{pulse.root / 'catalog.db'}",
                     PULSE_ICEBERG_COMMIT_SECONDS="1")
    worker = pulse.start_worker()
    pulse.produce(messages[:1000])
    assert pulse.lake_rows(1, timeout=90) > 0
    worker.kill9()  # between writes, or in the middle of one
    worker = pulse.start_worker()
    worker.wait_for_log("ingest reads input partitions", timeout=60)
    api = start_api(pulse)
    api.wait_until_read(1000)

    proxy.cut_all()  # the store unreachable mid-flush: nothing may be lost or doubled
    pulse.produce(messages[1000:2000])
    wait_for_status(api, failing=True)
    with urllib.request.urlopen(f"{api.url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert re.search(r'^pulse_lake_write_failing\{partition="\d+"\} 1\.0$', metrics, re.M)
    assert "lake write failed" in worker.log()
    proxy.restore()
    pulse.produce(messages[2000:])
    live = pulse.rollups(until=read_all(len(messages)), timeout=120)
    assert pulse.lake_rows(len(valid), timeout=90) == len(valid)
    wait_for_status(api, failing=False)

    # Every valid event once, at exactly one (partition, offset); every dead letter.
    (raw, places), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM {events}")
    assert raw == places == len(valid)
    deadline = time.monotonic() + 30
    while pulse.lake_sql("SELECT count(*) FROM {dead_letters}")[0][0] < len(bad):
        assert time.monotonic() < deadline, "dead letters did not reach the lake"
        time.sleep(0.3)
    unique = oracle.unique(valid)
    plain = pulse.lake_sql(
        "SELECT tenant_id, id, kafka_partition, kafka_offset FROM (SELECT DISTINCT ON "
        "(tenant_id, id) * FROM {events} ORDER BY tenant_id, id, kafka_partition, "
        "kafka_offset) ORDER BY ALL")
    assert len(plain) == len(unique) < len(valid)
    assert pulse_sql(pulse, EVENTS_QUERY) == plain

    # The API answers ranges cut inside hours from the lake (and the rollups), exactly.
    api.wait_until_read(len(messages))
    base = now_us - now_us % HOUR
    ranges = [(base - 50 * HOUR + 7_000_000, base - 2 * HOUR - 3_000_000),
              (base - 80 * HOUR, base + HOUR + 1)]
    assert overview_differences(api, valid, ("acme", "globex"), ranges) == []
    status, body = api.get("/analytics/status")
    assert status == 200 and body["lake"]["writes_failing"] == []
    assert worker.stop() == 0

    # pulse compact on S3: fewer files, the same rows; then pulse replay from them.
    store = LakeStore.open(pulse.settings.lake, pulse.settings)
    before = sum(len(lakefs.live(d, e)) for d, e in lakefs.lake_dirs(store).items())
    compact = subprocess.run([sys.executable, "-m", "pulse.cli", "compact", "--min-age", "0"],
                             env=pulse.full_env(), capture_output=True, text=True, timeout=300)
    assert compact.returncode == 0, compact.stderr
    after = sum(len(lakefs.live(d, e)) for d, e in lakefs.lake_dirs(store).items())
    assert after < before
    assert pulse_sql(pulse, EVENTS_QUERY) == plain
    assert pulse_sql(pulse, "SELECT count(*) FROM events_raw") == [(len(valid),)]
    tables = iceberg.Tables(pulse.settings.iceberg_catalog or "", store, pulse.settings)
    live_files = {iceberg.table_path(store, rel) for d, e in lakefs.lake_dirs(store).items()
                  for rel in lakefs.live(d, e)}
    paths = table_paths(tables)
    assert sorted(paths) == sorted(live_files) and len(set(paths)) == len(paths)
    assert table_counts(tables) == (len(valid), len(unique), len(bad))
    replay = pulse.start("replay", "--force")
    assert replay.process.wait(120) == 0, replay.log()
    rebuilt = pulse.rollups(until=read_all(len(messages)))
    assert accounting(rebuilt) == accounting(live)
    assert counters(rebuilt)["read"] == len(messages)
    assert oracle.approx_equal(answers(rebuilt, now_us), answers(live, now_us))
