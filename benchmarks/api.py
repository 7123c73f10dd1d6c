"""`pulse bench api`: a rollup-backed endpoint vs a Starlette hello-JSON served the same way.

The real `pulse api` runs as a subprocess on a real (embedded) broker, with its rollups
filled the way a worker fills them: generated events go through
`rollups.local.LocalPartitions` (the worker's routing and processing, by hand), and the
resulting journal records (one `Claim`, then `Delta`s per journal partition) are
produced to the journal topic, which the API folds before it is ready. The endpoint is
`/analytics/campaign/{id}` over a 7-day hour-aligned range inside retention, with a
tenant API key, so every answer comes from the rollups alone (checked: `source` is
"rollups" and the numbers are those of the same records folded here).

Then the same request as a dashboard's poll sends it, with the answer's `ETag` as
`If-None-Match` (each checked to be a 304 first): what a poll costs while nothing it
reads has moved. The insight answers the rollups give (`INSIGHTS`: the campaign with its
previous period, the heatmap and the daily series in Europe/Berlin, breakdowns by
channel and campaign) then get the same load, each checked to come from the rollups
alone first.

The baseline is one Starlette route returning `{"hello": "world"}` (`benchmarks.hello`),
served by uvicorn exactly as `pulse api` is: one process, uvloop, httptools. Both get
the same load from one generator in its own process: `wrk` when it is installed,
else `benchmarks.loadgen`, `clients` keep-alive connections for `seconds` each. The
generator's and the servers' CPU are reported, so a saturated generator shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from pulse.checkpoint_store import rollup_spec
from pulse.kafka import CLIENT_DEFAULTS
from pulse.rollups import journal, report
from pulse.rollups.local import LocalPartitions
from pulse.rollups.store import RollupStore
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.schemas.topics import Topics
from pulse.settings import Settings
from pulse.streams.broker import ensure_topics

from .harness import Summary, bench_settings, broker, free_port, say, spawn
from .workload import HOUR_MS, events

GOAL_P99_MS = 5.0
GOAL_RATIO = 0.5
FLOOR_P99_MS = 6.0
FLOOR_RATIO = 0.5
"""Floors raised toward what was reached (p99 3.9-4.1 ms, the insight answers' 3.7-4.6 ms;
0.67-0.70x), with room for a shared machine's p99 (hello's own has reached 8 ms on a bad
day: a run that misses this floor is worth running again before it is believed)."""
TENANT = "acme"
CAMPAIGN = "spring"
KEY = "bench-acme-key-0001"
BATCH = 2000
SESSION = "bench-api"


# ---- filling the rollups ---------------------------------------------------------------


def journal_records(settings: Settings, n: int,
                    now_ms: int) -> dict[int, list[journal.Record]]:
    """Journal records per partition for `n` messages of the last 7 days, as a worker
    writes them: a claim, then one delta per keyed message."""
    now_us = now_ms * 1000
    local = LocalPartitions(rollup_spec(settings), session=SESSION)
    entries: list[tuple[int, int, Event | str]] = []
    offsets = [0] * settings.partitions
    for i, (_, value) in enumerate(events(n, seed=3, invalid=0.0, now_ms=now_ms)):
        event = decode_event(value, now_us)
        if not isinstance(event, Event):
            raise RuntimeError(f"a generated event is invalid: {event}")
        source = i % settings.partitions
        entries.append((source, offsets[source], event))
        offsets[source] += 1
    for start in range(0, len(entries), BATCH * settings.partitions):
        local.send(entries[start:start + BATCH * settings.partitions])
    local.heartbeat({p: now_us for p in range(settings.partitions)})
    return local.journals


async def produce_journal(settings: Settings, records: dict[int, list[journal.Record]]) -> int:
    """Append the records to the journal topic, in order per partition; returns bytes."""
    topic = Topics(settings.topic, settings.dlq_topic).rollups
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=False, max_request_size=8 * 1024 * 1024,
                                linger_ms=5, **CLIENT_DEFAULTS)
    await producer.start()
    size = 0
    try:
        for q, items in records.items():
            for record in items:
                value = journal.encode(record)
                size += len(value)
                await producer.send(topic, value, partition=q)
        await producer.flush()
    finally:
        await producer.stop()
    return size


def expected_overview(records: dict[int, list[journal.Record]], settings: Settings,
                      hours: tuple[int, int]) -> dict[str, Any]:
    """The overview the API must answer once it has folded every record."""
    store = RollupStore()
    for q, items in records.items():
        fold = store.fold(q)
        for offset, record in enumerate(items):
            fold.feed(record, offset)
    m = store.total(TENANT, CAMPAIGN, *hours)
    return msgspec.to_builtins(report.overview(m, settings.funnel_steps))


# ---- the servers -----------------------------------------------------------------------


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, body, _ = get_with_headers(url, headers)
    return status, body


def get_with_headers(url: str, headers: dict[str, str] | None = None,
                     ) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers with lower-case names); status 0 if nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), _lower(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), _lower(exc.headers)
    except OSError:
        return 0, b"", {}


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float,
             headers: dict[str, str] | None = None) -> bytes:
    """Poll `url` until it answers 200; fail with the server's log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url, headers)
        if status == 200:
            return body
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 (last {status} {body[:300]!r}):\n"
                               f"{log.read_text()[-3000:]}")
        time.sleep(0.1)


def wait_for_numbers(url: str, want: dict[str, Any], process: subprocess.Popen[bytes],
                     log: Path, timeout: float) -> dict[str, Any]:
    """Ask until the API has folded the whole journal (its answer equals `want`)."""
    deadline = time.monotonic() + timeout
    while True:
        body = json.loads(wait_for(url, process, log, timeout, {"Authorization": f"Bearer {KEY}"}))
        if body["source"] != "rollups":
            raise RuntimeError(f"expected an answer from the rollups alone, got {body['source']}")
        if all(_close(body[k], v) for k, v in want.items()):
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API's answer never matched the journal: {body} != {want}")
        time.sleep(0.2)


def _close(a: Any, b: Any) -> bool:
    """Equal, floats to within summation order: a tenant's sums add its partitions' parts
    in whatever order their journal records arrived."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and \
            abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def start_hello(port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pulse.benchmarks.hello", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the load ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One target's result under the generator."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    """Share of one core the server used."""
    generator_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def describe(self) -> str:
        return (f"{self.rate:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms")

    def numbers(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_req_per_s": round(self.rate), f"{prefix}_p50_ms": round(self.p50_ms, 2),
                f"{prefix}_p99_ms": round(self.p99_ms, 2), f"{prefix}_requests": self.requests,
                f"{prefix}_server_cpu": round(self.server_cpu, 2),
                f"{prefix}_generator_cpu": round(self.generator_cpu, 2)}


_WRK_PCT = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    pct = {int(p): float(v) * _UNIT[u] for p, v, u in _WRK_PCT.findall(text)}
    total = _WRK_TOTAL.search(text)
    if total is None or set(pct) != {50, 99}:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    errors = sum(int(x) for m in (_WRK_NON2XX.search(text),) if m for x in m.groups())
    socket = _WRK_ERRORS.search(text)
    errors += sum(int(x) for x in socket.groups()) if socket else 0
    return {"requests": int(total.group(1)),
            "seconds": float(total.group(2)) * _UNIT[total.group(3)] / 1000,
            "p50_ms": pct[50], "p99_ms": pct[99], "errors": errors}


def generator_command(url: str, clients: int, seconds: float, headers: list[str],
                      expect: int = 200) -> list[str]:
    """wrk (which counts any 2xx or 3xx as answered: `conditional` checks the 304
    before and after), else `benchmarks.loadgen`, which checks every status."""
    wrk = shutil.which("wrk")
    if wrk:
        return [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
                *[arg for h in headers for arg in ("-H", h)], url]
    return [sys.executable, "-m", "pulse.benchmarks.loadgen", url, str(clients), str(seconds),
            "--expect", str(expect), *headers]


def generator_name() -> str:
    return "wrk" if shutil.which("wrk") else "python asyncio (benchmarks/loadgen.py)"


def load(url: str, clients: int, seconds: float, headers: list[str], server_pid: int,
         expect: int = 200) -> Load:
    """Run the generator against `url` in its own process and read its result.

    CPU shares are over the load window the generator reports; the server is idle
    while the generator starts, and `wrk` starts in milliseconds.
    """
    command = generator_command(url, clients, seconds, headers, expect)
    with tempfile.TemporaryFile() as out:
        server_before = cpu_seconds(server_pid)
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        server = cpu_seconds(server_pid) - server_before
        out.seek(0)
        text = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed (exit {process.returncode}):\n"
                           f"{text[-2000:]}")
    result = parse_wrk(text) if command[0].endswith("wrk") else json.loads(text)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests to {url}:\n{text[-2000:]}")
    window = result["seconds"]
    generator = result.get("cpu", (usage.ru_utime + usage.ru_stime) / window)
    return Load(result["requests"], result["errors"], window, result["p50_ms"],
                result["p99_ms"], server / window, generator)


def measure(name: str, url: str, clients: int, seconds: float, headers: list[str],
            pid: int, expect: int = 200) -> Load:
    say(f"  {name}: warming up, then {clients} clients for {seconds:g} s")
    load(url, clients, min(2.0, seconds / 3), headers, pid, expect)
    result = load(url, clients, seconds, headers, pid, expect)
    say(f"  {name}: {result.describe()} (server {result.server_cpu:.0%} of a core, "
        f"generator {result.generator_cpu:.0%})")
    return result


# ---- the run ----------------------------------------------------------------------------


def fill_journal(settings: Settings, n: int, now_ms: int,
                 hours: tuple[int, int]) -> tuple[int, dict[str, Any]]:
    """Produce the journal of `n` events; returns its records and the overview it makes."""
    say(f"pulse bench api: folding {n:,} events of the last 7 days into journal records")
    records = journal_records(settings, n, now_ms)
    size = asyncio.run(produce_journal(settings, records))
    count = sum(len(r) for r in records.values())
    say(f"  produced {count:,} journal records ({size / 2**20:.1f} MiB)")
    return count, expected_overview(records, settings, hours)


def run_api_bench(seconds: float, clients: int, quick: bool) -> int:
    summary = Summary("api", quick)
    load_before = os.getloadavg()[0]
    n = 20_000 if quick else 200_000
    now_ms = int(time.time() * 1000)
    to_ms = now_ms // HOUR_MS * HOUR_MS
    hours = ((to_ms - 7 * 24 * HOUR_MS) // HOUR_MS, to_ms // HOUR_MS)
    frm, to = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h * 3600)) for h in hours)
    path = f"/analytics/campaign/{CAMPAIGN}?from={frm}&to={to}"
    auth = f"Authorization: Bearer {KEY}"
    with tempfile.TemporaryDirectory(prefix="pulse-bench-api-") as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root)
        asyncio.run(ensure_topics(settings))
        count, want = fill_journal(settings, n, now_ms, hours)
        api_port, hello_port = free_port(), free_port()
        api = spawn(["api"], settings, root / "api.log", PULSE_API_KEYS=f"{KEY}={TENANT}",
                    PULSE_API_PORT=str(api_port), PULSE_API_HOST="127.0.0.1")
        hello = start_hello(hello_port, root / "hello.log")
        try:
            wait_for(f"http://127.0.0.1:{api_port}/readyz", api, root / "api.log", 60)
            sample = wait_for_numbers(f"http://127.0.0.1:{api_port}{path}", want, api,
                                      root / "api.log", 60)
            say(f"  pulse api ready: {sample['conversations']['total']:,} conversations of "
                f"{CAMPAIGN} from {sample['source']}")
            wait_for(f"http://127.0.0.1:{hello_port}/hello", hello, root / "hello.log", 30)
            say(f"  load generator: {generator_name()}")
            base = measure("hello", f"http://127.0.0.1:{hello_port}/hello", clients, seconds,
                           [], hello.pid)
            ours = measure("pulse", f"http://127.0.0.1:{api_port}{path}", clients, seconds,
                           [auth], api.pid)
            polls = conditional(f"http://127.0.0.1:{api_port}{path}", clients, seconds, auth,
                                api.pid)
            insights = measure_insights(f"http://127.0.0.1:{api_port}", frm, to, clients,
                                        0.5 if quick else seconds, auth, api.pid)
        finally:
            stop(hello)
            stop(api)
    ratio = ours.rate / base.rate
    slowest = max(insights, key=lambda name: insights[name].p99_ms)
    summary.numbers.update({
        **{k: v for name, result in insights.items() for k, v in result.numbers(name).items()},
        "clients": clients, "seconds": seconds, "journal_events": n,
        "journal_records": count, "answer_conversations": sample["conversations"]["total"],
        "answer_intents": sample["intents"]["total"],
        "endpoint": f"/analytics/campaign/{CAMPAIGN} (7 days, hour-aligned, source=rollups)",
        "generator": generator_name(), "ratio": round(ratio, 3),
        **ours.numbers("pulse"), **base.numbers("hello"), **polls.numbers("not_modified"),
        "not_modified_ratio": round(polls.rate / base.rate, 3),
        "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    })
    goal = ours.p99_ms <= GOAL_P99_MS and ratio >= GOAL_RATIO
    worst_p99 = insights[slowest].p99_ms
    line = (f"/analytics/campaign {ours.describe()} vs hello-JSON {base.describe()} = "
            f"{ratio:.2f}x req/s ({clients} clients, {seconds:g} s, {generator_name()}; "
            f"goal p99 <= {GOAL_P99_MS:g} ms and >= {GOAL_RATIO}x: "
            f"{'met' if goal else 'missed'}); polls with its ETag: 304 {polls.describe()} "
            f"= {polls.rate / base.rate:.2f}x; {len(insights)} insight answers from the "
            f"rollups, the slowest {slowest} {insights[slowest].describe()} (goal p99 <= "
            f"{GOAL_P99_MS:g} ms: {'met' if worst_p99 <= GOAL_P99_MS else 'missed'})")
    return summary.finish(line, max(ours.p99_ms, polls.p99_ms, worst_p99) <= FLOOR_P99_MS
                          and ratio >= FLOOR_RATIO,
                          f"p99 <= {FLOOR_P99_MS:g} ms and >= {FLOOR_RATIO}x req/s")


def conditional(url: str, clients: int, seconds: float, auth: str, pid: int) -> Load:
    """The load of dashboards polling `url` with its answer's ETag: every request a 304
    (checked before and after, as wrk does not tell a 304 from a 200)."""
    header = dict([auth.split(": ", 1)])
    status, _, headers = get_with_headers(url, header)
    tag = headers.get("etag")
    if status != 200 or not tag:
        raise RuntimeError(f"no ETag on {url}: {status} {headers}")
    polled = {**header, "If-None-Match": tag}

    def check(moment: str) -> None:
        status, body, _ = get_with_headers(url, polled)
        if status != 304:
            raise RuntimeError(f"a poll with the answer's ETag got {status} {body[:300]!r} "
                               f"{moment} the load, not 304")

    check("before")
    result = measure("pulse 304", url, clients, seconds, [auth, f"If-None-Match: {tag}"], pid,
                     expect=304)
    check("after")
    return result


INSIGHTS = {
    "compare_previous": f"/analytics/campaign/{CAMPAIGN}?compare=previous&",
    "heatmap_berlin": f"/analytics/heatmap?campaign={CAMPAIGN}&tz=Europe/Berlin&",
    "breakdown_channel": "/analytics/breakdown?by=channel&",
    "breakdown_campaign": "/analytics/breakdown?by=campaign&",
    "timeseries_days_berlin": "/analytics/timeseries?metric=conversations&interval=day&"
                              "tz=Europe/Berlin&",
}
"""The insight answers the rollups give (whole hours inside retention, zones whose
offsets are whole hours), over the same 7 days."""


def measure_insights(base: str, frm: str, to: str, clients: int, seconds: float, auth: str,
                     pid: int) -> dict[str, Load]:
    """Each insight answer under the same load, once its answer is known to come from the
    rollups alone and to hold something."""
    out = {}
    header = dict([auth.split(": ", 1)])
    for name, path in INSIGHTS.items():
        url = f"{base}{path}from={frm}&to={to}"
        status, body = get(url, header)
        answer = json.loads(body) if status == 200 else {}
        if answer.get("source") != "rollups":
            raise RuntimeError(f"{name}: expected an answer from the rollups alone, got "
                               f"{status} {body[:300]!r}")
        if name.startswith("breakdown") and not answer["groups"]:
            raise RuntimeError(f"{name}: no groups; measuring it would prove nothing")
        out[name] = measure(name, url, clients, seconds, [auth], pid)
    return out
