"""A crash storm: two workers kill -9'd again and again while traffic flows.

Fault injected: `PULSE_CRASH_CYCLES` kills (default 4; the full run is 20) of workers
`state-a` and `state-b`, each followed at once by a restart of the same worker, while a
producer thread sends events (with retried copies and dead letters) the whole time.
The kills rotate through moments that matter:

- `flush`: the instant a lake intent marker (`_pulse/ingest/*/*.json`) is rewritten,
  killing the worker that owns that input partition, between steps 1 and 3 of the lake
  sink's durability order;
- `recovery`: the instant the just-restarted worker logs its first keyed-partition
  claim, while it may be folding the journal of its next partition;
- `rebalance`: the other worker, while the just-restarted one is joining the group;
- `start`: the just-restarted worker, within 2.5 s of its start;
- `random`: any worker at a random moment.

What must hold at the end (contract sections 2, 3 and 5): the rollups folded from the
journal equal the oracle exactly (read, accepted, duplicates, every tenant's overview
and usage); the lake holds every valid message once (no input offset twice), its
distinct (tenant, id) pairs are the oracle's, and every dead letter is there once; and a
`pulse api` process that tailed the journal through the whole storm answers
`/analytics/overview` for every tenant, over wide aligned and unaligned ranges, as the
oracle does.
"""

from __future__ import annotations

import glob
import os
import random
import re
import threading
import time
from collections import Counter

import pytest

from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from tests import oracle
from tests.api_process import overview_differences, start_api
from tests.deployment import Pulse
from tests.streams.test_faults import READY, assert_exact
from tests.streams.test_pipeline import HOUR, make_stream

pytestmark = pytest.mark.broker

CYCLES = int(os.environ.get("PULSE_CRASH_CYCLES", "4"))
KINDS = ("flush", "recovery", "rebalance", "start", "random")
RATE = 1_000
"""Messages per second the traffic thread sends."""
SECONDS_PER_CYCLE = 20
"""Enough messages are generated for this long per cycle; the thread stops when told."""


class Traffic(threading.Thread):
    """Sends `messages` in small slices at `rate` per second until stopped or done."""

    def __init__(self, pulse: Pulse, messages: list, rate: float) -> None:
        super().__init__(daemon=True)
        self.pulse, self.messages, self.rate = pulse, messages, rate
        self.sent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = max(1, int(self.rate / 4))
            while self.sent < len(self.messages) and not self.stopping.is_set():
                started = time.monotonic()
                self.sent += self.pulse.produce(self.messages[self.sent : self.sent + step])
                time.sleep(max(0.0, step / self.rate - (time.monotonic() - started)))
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self) -> list:
        self.stopping.set()
        self.join()
        assert self.error is None, self.error
        return self.messages[: self.sent]


class Storm:
    """Two workers, the kills, and a note of what each kill hit."""

    def __init__(self, pulse: Pulse, rnd: random.Random) -> None:
        self.pulse, self.rnd = pulse, rnd
        self.workers = {state: pulse.start_worker(state) for state in ("state-a", "state-b")}
        self.last_started: str | None = None
        self.notes: list[str] = []

    def other(self, state: str) -> str:
        return "state-b" if state == "state-a" else "state-a"

    def kill_and_restart(self, state: str, note: str) -> None:
        worker = self.workers[state]
        assert worker.alive(), f"{state} died on its own:\n{worker.log()[-3000:]}"
        worker.kill9()
        self.workers[state] = self.pulse.start_worker(state)
        self.last_started = state
        self.notes.append(note)

    def wait_ready(self, state: str) -> None:
        self.workers[state].wait_for_log(READY, timeout=90)

    def owner_of(self, partition: int) -> str:
        """The worker whose latest ingest assignment holds `partition` (else either)."""
        for state, worker in self.workers.items():
            found = re.findall(r"ingest reads input partitions \[([\d, ]*)\]", worker.log())
            if found and str(partition) in found[-1].replace(" ", "").split(","):
                return state
        return self.rnd.choice(sorted(self.workers))

    # ---- the kinds of kill ---------------------------------------------------------

    def flush(self) -> None:
        """Kill the owner of a partition the instant its lake intent marker is rewritten."""
        for state in self.workers:
            self.wait_ready(state)
        pattern = os.path.join(self.pulse.settings.lake, "_pulse", "ingest", "*", "*.json")

        def marks() -> dict[str, int]:
            out = {}
            for path in glob.glob(pattern):
                try:
                    out[path] = os.stat(path).st_mtime_ns
                except FileNotFoundError:
                    pass
            return out

        before = marks()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = marks()
            moved = [path for path, mtime in now.items() if before.get(path) != mtime]
            if moved:
                partition = int(os.path.basename(moved[0])[1:5])
                state = self.owner_of(partition)
                self.kill_and_restart(state, f"flush: {state} as p{partition}'s marker moved")
                return
            time.sleep(0.001)
        raise AssertionError("no lake flush in 30 s while traffic flows")

    def recovery(self) -> None:
        """Kill the just-restarted worker right after its first keyed-partition claim."""
        state = self.last_started or self.rnd.choice(sorted(self.workers))
        self.workers[state].wait_for_log("keyed partition", timeout=90)
        self.kill_and_restart(state, f"recovery: {state} after its first claim")

    def rebalance(self) -> None:
        """Kill the other worker while the just-restarted one is joining the group."""
        joining = self.last_started or self.rnd.choice(sorted(self.workers))
        time.sleep(self.rnd.uniform(0.3, 2.5))
        joined = READY.encode() in self.workers[joining].log_path.read_bytes()
        state = self.other(joining)
        self.kill_and_restart(state, f"rebalance: {state} while {joining} "
                                     f"{'had joined' if joined else 'was joining'}")

    def start(self) -> None:
        """Kill the just-restarted worker soon after its start."""
        state = self.last_started or self.rnd.choice(sorted(self.workers))
        time.sleep(self.rnd.uniform(0.1, 2.5))
        ready = READY.encode() in self.workers[state].log_path.read_bytes()
        self.kill_and_restart(state, f"start: {state} {'once' if ready else 'before'} "
                                     "it was reading")

    def random(self) -> None:
        for state in self.workers:
            self.wait_ready(state)
        time.sleep(self.rnd.uniform(0.2, 3))
        state = self.rnd.choice(sorted(self.workers))
        self.kill_and_restart(state, f"random: {state}")


def test_crash_storm_leaves_rollups_lake_and_api_exact(pulse: Pulse):
    started = time.monotonic()
    now_us = time.time_ns() // 1000
    pool, _, bad = make_stream(seed=2024, n=CYCLES * SECONDS_PER_CYCLE * RATE, now_us=now_us)
    pulse.ensure_topics()
    api = start_api(pulse)
    storm = Storm(pulse, random.Random(CYCLES))
    for state in storm.workers:
        storm.wait_ready(state)
    traffic = Traffic(pulse, pool, RATE)
    traffic.start()
    for cycle in range(CYCLES):
        getattr(storm, KINDS[cycle % len(KINDS)])()
    for state in storm.workers:
        storm.wait_ready(state)
    time.sleep(1)  # some traffic with both workers settled
    messages = traffic.stop()

    valid = [e for _, raw, _ in messages if isinstance(e := decode_event(raw, now_us), Event)]
    unique = oracle.unique(valid)
    resumed = sum(proc.log().count("resuming an interrupted lake flush")
                  for proc in pulse.procs if proc.args == ["worker"])
    print(f"\ncrash storm: {CYCLES} kills in {time.monotonic() - started:.0f} s, "
          f"{len(messages):,} messages ({len(valid):,} valid, {len(unique):,} unique); "
          f"interrupted lake flushes resumed: {resumed}")
    kinds = Counter(note.split(":")[0] for note in storm.notes)
    print("  kills by moment: " + ", ".join(f"{kind} {kinds[kind]}" for kind in KINDS))
    for note in storm.notes:
        print(f"  kill {note}")

    # The rollups and the lake (rows, offsets, distinct ids, as in the kill -9 test).
    assert_exact(pulse, messages, valid, now_us)
    assert set(pulse.lake_sql("SELECT DISTINCT tenant_id, id FROM {events}")) == {
        (e.tenant_id, e.id) for e in unique}
    expected_dead = Counter(raw for _, raw, _ in messages if raw in bad)
    lake_dead = pulse.lake_sql("SELECT raw, kafka_partition, kafka_offset FROM {dead_letters}")
    assert Counter(bytes(raw) for raw, _, _ in lake_dead) == expected_dead
    assert len({(p, o) for _, p, o in lake_dead}) == len(lake_dead)

    # The API, which folded the journal live through every kill and claim.
    api.wait_until_read(len(messages))
    base = now_us - now_us % HOUR
    ranges = [
        (base - 30 * 24 * HOUR, base + 2 * HOUR),  # everything, whole hours
        (base - 75 * HOUR + 433_000_000, base + HOUR + 59 * 60_000_000),  # ragged edges
        (base - 24 * HOUR, base - 5 * HOUR),
    ]
    differences = overview_differences(api, valid, ("acme", "globex", "initech"), ranges)
    print(f"  API overview differences: {len(differences)}; wall time "
          f"{time.monotonic() - started:.0f} s")
    assert not differences, "\n".join(differences)
    for state, worker in storm.workers.items():
        assert worker.alive(), f"{state}:\n{worker.log()[-3000:]}"
    assert api.proc.alive()
    print(f"  differences from the oracle: 0 (rollups, lake, dead letters, API) after "
          f"{CYCLES} kills")
