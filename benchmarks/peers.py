"""`pulse bench peers`: Pulse's ingest job beside the same job written for its peers.

The job is point 1's ingest workload: decode JSON, skip invalid messages, drop
duplicates by (tenant_id, id), count per (tenant, campaign, UTC hour) and per (tenant,
intent label, UTC hour). It is written once for each system a user might pick instead
of Pulse, each as its authors' documentation recommends (the modules under
`benchmarks/peers_jobs/` say which pages and examples they follow):

- a hand-written aiokafka `getmany()` loop with orjson and dicts (the baseline),
- bytewax (`stateful_flat_map` dedup, `count_window` on an event clock),
- Quix Streams (`group_by`, a stateful filter, `tumbling_window().reduce()`),
- Faust (a parsing agent re-keying by tenant, then a counting agent with a `seen`
  table and windowed tables).

The workload (`common.events`: realistic events, 5 % exact duplicates, a few invalid)
is produced once on a fresh embedded broker; every job reads the same topic from the
beginning, in a process of its own so that its peak RSS is its own, and writes its
final counts, which must equal the oracle (`peers_answer`) cell for cell. Pulse runs
as one `pulse worker` (`peers_pulse`).

Each rate is messages / seconds from the job's partitions assigned (or first message)
to its final counts in hand: group joins and interpreter start are left out for
everyone, window emission at the end of the input is in. Pulse's clock starts when
its ingest stage has joined its group and stops when the rollups are complete *and*
every event is durable in the Parquet lake, which the peers do not write.

At full size the jobs run one after another, so that none slows another. `--quick`
checks answers, not speed: it starts every job at once beside Pulse, which takes
the time of the slowest start-up instead of the sum of all.

The shared input topic is created with `retention.ms` and `retention.bytes`: Quix
Streams reads them back to derive its internal topics, and the embedded broker reports
only the configs given at creation. A peer whose package is missing, that fails, or
that runs out of time is reported as such, and the others still run. The run fails
when Pulse fails or answers wrongly, or, at full size, when Pulse's rate is below
FLOOR times the hand-written loop's.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pulse.kafka import CLIENT_DEFAULTS
from pulse.settings import Settings
from pulse.streams.broker import TOPIC_EXISTS, ensure_topics
from pulse.streams.ingest_process import die_with

from .harness import Summary, bench_settings, broker, rss_mb, say
from .ingest import count
from .peers_answer import Answer, Outcome, compare, counts, oracle, rounded
from .peers_pulse import run_pulse
from .workload import events, produce

FLOOR = 0.6
GOAL = 1.0
RETENTION = {"retention.ms": str(8 * 24 * 3_600_000), "retention.bytes": "-1"}
"""Input topic configs given at creation (Quix Streams needs them on Tansu)."""
INSTALL = "pip install 'campaign-pulse[peers]'"


@dataclass(frozen=True)
class Peer:
    key: str
    name: str
    module: str
    """Module under `pulse.benchmarks.peers_jobs` that runs the job."""
    package: str
    """Distribution whose version names the row."""
    imports: tuple[str, ...]
    """What the job imports: a missing one means the peer is not installed."""


PEERS = (
    Peer("handwritten", "hand-written aiokafka loop", "handwritten", "aiokafka",
         ("aiokafka", "orjson")),
    Peer("bytewax", "bytewax", "bytewax_job", "bytewax", ("bytewax", "confluent_kafka")),
    Peer("quix", "Quix Streams", "quix_job", "quixstreams", ("quixstreams",)),
    Peer("faust", "Faust agents + tables", "faust_job", "faust-streaming", ("faust",)),
)


@dataclass
class Job:
    """A peer's job, started (or not, when its package is missing)."""

    peer: Peer
    outcome: Outcome
    process: subprocess.Popen[bytes] | None = None
    out: Path = Path()
    log: Path = Path()
    deadline: float = 0.0
    budget: float = 0.0


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def missing(peer: Peer) -> str | None:
    """Why the peer cannot run here, if it cannot: the first of its imports not installed."""
    for name in peer.imports:
        # Imported already means installed; and faust puts a module without a
        # `__spec__` in its place in sys.modules, on which `find_spec` raises.
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            return f"not installed ({INSTALL}): no module {name}"
    return None


def start(peer: Peer, bootstrap: str, topic: str, group: str, n: int, root: Path,
          budget: float) -> Job:
    """Start the peer's job in a process of its own, reading `topic` from the beginning."""
    job = Job(peer, Outcome(peer.key, f"{peer.name} {version(peer.package)}"))
    job.outcome.load = os.getloadavg()[0]
    why = missing(peer)
    if why:
        job.outcome.note = why
        return job
    job.out, job.log = root / f"{peer.key}.json", root / f"{peer.key}.log"
    args = [sys.executable, "-m", f"pulse.benchmarks.peers_jobs.{peer.module}",
            "--bootstrap", bootstrap, "--topic", topic, "--expect", str(n),
            "--out", str(job.out), "--group", f"{group}-{peer.key}",
            "--state-dir", str(root / f"{peer.key}-state")]
    say(f"  {job.outcome.system}: running (at most {budget:.0f} s)")
    with open(job.log, "wb") as output:
        # A peer that outlives the benchmark (killed by a timeout) would go on eating CPU.
        job.process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True,
                                       preexec_fn=partial(die_with, os.getpid()))
    job.deadline, job.budget = time.monotonic() + budget, budget
    return job


def _wait(pid: int, deadline: float) -> tuple[int | None, float]:
    """(exit code, or None if still running at the deadline; peak RSS in MiB so far)."""
    peak = 0.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), peak
        peak = max(peak, rss_mb(pid, "VmHWM"))
        if time.monotonic() >= deadline:
            return None, peak
        time.sleep(0.2)


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    os.waitpid(process.pid, 0)
    process.returncode = -signal.SIGKILL


def finish(job: Job, n: int, truth: Answer) -> Outcome:
    """Wait for the job (until its deadline) and judge its answer."""
    outcome, process = job.outcome, job.process
    if process is None:
        return outcome
    try:
        code, outcome.rss_mb = _wait(process.pid, job.deadline)
    except BaseException:
        _kill(process)
        raise
    if code is None:
        _kill(process)
        progress = _read_json(job.out.with_suffix(".progress"))
        read, seconds = int(progress.get("read", 0)), float(progress.get("seconds", 0.0))
        outcome.note = (f"unfinished: read {read:,} of {n:,} messages in the "
                        f"{job.budget:.0f} s budget")
        if read and seconds:
            outcome.rate, outcome.seconds = read / seconds, seconds
            outcome.note += " (rate over what it read)"
        return outcome
    process.returncode = code
    answer = _read_json(job.out)
    if code != 0 or not answer:
        for line in _log_tail(job.log):
            say(f"    | {line}")
        outcome.note = f"failed: exited with code {code}: {_why(job.log)}"
        return outcome
    outcome.rss_mb = max(outcome.rss_mb or 0.0, float(answer.get("peak_rss_mb", 0.0)))
    outcome.seconds = float(answer["seconds"])
    outcome.rate = answer["read"] / outcome.seconds if outcome.seconds > 0 else None
    outcome.exact, outcome.note = compare(truth, Answer(counts(answer["campaigns"]),
                                                        counts(answer["intents"])))
    if answer["read"] != n:
        outcome.exact = False
        outcome.note = f"read {answer['read']:,} of {n:,} messages; {outcome.note}"
    return outcome


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _log_tail(log: Path, lines: int = 20) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _why(log: Path) -> str:
    """The most telling line of a failed job's log: its exception, else its last line."""
    tail = _log_tail(log, 200)
    for line in reversed(tail):
        if "Error" in line or "Exception" in line:
            return line.strip()[:200]
    return tail[-1].strip()[:200] if tail else "no output"


# ---- the run ----------------------------------------------------------------------------


async def create_topics(settings: Settings) -> None:
    """The input topic with the configs Quix reads back, then every topic Pulse uses."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **CLIENT_DEFAULTS)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(
            settings.topic, settings.partitions, settings.replication_factor,
            topic_configs=RETENTION)])
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_EXISTS):
                raise RuntimeError(f"cannot create topic {name}: {message} (error {code})")
    finally:
        await admin.close()
    await ensure_topics(settings)


def table(rows: list[Outcome], base: float | None) -> None:
    say("")
    say(f"  {'system':<40} {'events/s':>10} {'x hand-written':>15} {'peak RSS MiB':>13}"
        f"  {'exact':<5}  load*")
    for row in rows:
        if not row.ran:
            say(f"  {row.system:<40} {row.note}")
            continue
        ratio = f"{row.rate / base:.2f}" if row.rate and base else "-"
        exact = {True: "yes", False: "NO", None: "-"}[row.exact]
        load = f"{row.load:.1f}" if row.load is not None else "-"
        say(f"  {row.system:<40} {row.rate:>10,.0f} {ratio:>15} {row.rss_mb or 0:>13,.0f}"
            f"  {exact:<5}  {load}")
        if row.note:
            say(f"  {'':<40} {row.note}")
    say(f"  * 1-minute load average as the job started, on {os.cpu_count()} cores: well above"
        " 1, other work shared the machine and the rates are low and noisy.")
    say("")


def brief(row: Outcome) -> str:
    """A row in a few words for the summary line: rate, peak RSS, exact."""
    name = row.system.split(" ")[0]
    if not row.ran:
        return f"{name} {row.note.split(':')[0]}"
    exact = {True: "exact", False: "NOT exact", None: "unfinished"}[row.exact]
    return f"{name} {row.rate:,.0f}/s {row.rss_mb or 0:,.0f} MiB {exact}"


def run_peers(n: int, quick: bool) -> int:
    summary = Summary("peers", quick)
    budget = 60 + n / 600
    with tempfile.TemporaryDirectory() as tmp, broker() as bootstrap:
        root = Path(tmp)
        settings = bench_settings(bootstrap, root)
        asyncio.run(create_topics(settings))
        say(f"pulse bench peers: generating {n:,} messages")
        messages = list(events(n))
        expected = count(messages)
        truth = oracle(messages)
        produced = asyncio.run(produce(bootstrap, settings.topic, iter(messages), n))
        del messages
        say(f"  produced in {produced:.1f} s ({n / produced:,.0f}/s)")

        def job(peer: Peer) -> Job:
            return start(peer, bootstrap, settings.topic, settings.group, n, root, budget)

        if quick:
            jobs = [job(peer) for peer in PEERS]
            load = os.getloadavg()[0]
            pulse = run_pulse(settings, root, expected, n, truth)
            peers = [finish(j, n, truth) for j in jobs]
        else:
            peers = [finish(job(PEERS[0]), n, truth)]
            load = os.getloadavg()[0]
            pulse = run_pulse(settings, root, expected, n, truth)
            peers += [finish(job(peer), n, truth) for peer in PEERS[1:]]
        pulse.load = load
    rows = [peers[0], pulse, *peers[1:]]
    hand = peers[0]
    base = hand.rate if hand.ran else None
    table(rows, base)

    pulse_ok = pulse.ran and pulse.exact is True
    ratio = pulse.rate / base if pulse.rate and base else None
    summary.numbers.update({
        "messages": n, **expected, "budget_s": round(budget), "concurrent": quick,
        "pulse_per_s": rounded(pulse.rate), "handwritten_per_s": rounded(base),
        "pulse_rollups_only_per_s": rounded(n / pulse.rollups_s) if pulse.rollups_s else None,
        "ratio": rounded(ratio, 3), "goal": GOAL, "floor": FLOOR,
        "pulse_exact": pulse.exact, "handwritten_exact": hand.exact,
        "systems": {row.key: row.record(base) for row in rows},
    })
    others = "; ".join(brief(row) for row in peers[1:])
    if not pulse.ran:
        line = f"Pulse {pulse.note}; hand-written {base or 0:,.0f} msg/s"
    else:
        line = (f"{n:,} messages: Pulse {pulse.rate:,.0f} msg/s vs hand-written loop "
                f"{base or 0:,.0f} msg/s = {ratio or 0:.2f}x (goal {GOAL}x); "
                f"{brief(pulse)}; {brief(hand)}; {others}")
    ok = pulse_ok and ratio is not None and ratio >= FLOOR
    code = summary.finish(line, ok, f"{FLOOR}x, and Pulse exact")
    return code if pulse_ok else 1
