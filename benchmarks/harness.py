"""What every benchmark runs on: a fresh broker, its own settings, processes started as
users start them, their CPU and memory read from /proc, and a summary line.

Machines here are shared and noisy, so each benchmark runs its baseline in the same
run and reports the ratio; `Summary.finish` prints one line and, at full size, exits
non-zero when the ratio falls below its floor.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse.settings import Settings

RESULTS = Path("benchmarks/results")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker() -> Iterator[str]:
    """A fresh in-memory broker on a free loopback port, for this benchmark alone."""
    from pulse.streams.broker import EmbeddedBroker

    embedded = EmbeddedBroker("127.0.0.1", free_port())
    embedded.start()
    try:
        yield embedded.bootstrap
    finally:
        embedded.stop()


def bench_settings(bootstrap: str, root: Path, **changes: Any) -> Settings:
    """Settings of a deployment of its own (topics, group, lake, state) under `root`."""
    name = f"bench{uuid.uuid4().hex[:8]}"
    return Settings(kafka_bootstrap=bootstrap, topic=name, dlq_topic=f"{name}-dlq", group=name,
                    lake=str(root / "lake"), state_dir=str(root / "state")).replace(**changes)


def rss_mb(pid: int | str, field: str = "VmRSS") -> float:
    """A process's resident set (VmRSS) or its peak (VmHWM), in MiB; 0 once it has gone.

    Not `wait4`'s ru_maxrss: Linux carries a parent's peak into a child it starts (the
    memory it had before exec), which would make every child as large as its harness.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time a process has used so far; 0 once it has gone.

    What a stage costs per message, read this way, holds on a shared machine where its
    wall-clock rate does not."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener_pid(bootstrap: str) -> int | None:
    """The broker process listening on `bootstrap` (its command line names the address)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if b"broker" in cmdline and f"tcp://{bootstrap}".encode() in cmdline:
                return int(entry)
    return None


def ingest_child(pid: int) -> int | None:
    """The worker's ingest process."""
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return None
    for child in children:
        try:
            if b"pulse.streams.ingest_process" in open(f"/proc/{child}/cmdline", "rb").read():
                return int(child)
        except OSError:
            continue
    return None


def spawn(args: list[str], settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    variables = {
        **os.environ, "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PULSE_TOPIC": settings.topic, "PULSE_DLQ_TOPIC": settings.dlq_topic,
        "PULSE_GROUP": settings.group, "PULSE_LAKE": settings.lake,
        "PULSE_STATE_DIR": settings.state_dir, "PULSE_PARTITIONS": str(settings.partitions),
        **env,
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pulse.cli", *args], env=variables,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class Summary:
    """One benchmark's result: numbers, the ratio to its baseline and its floor."""

    name: str
    quick: bool
    numbers: dict[str, Any] = field(default_factory=dict)

    def finish(self, line: str, ok: bool, floor: str) -> int:
        """Print the one-line summary; at full size a miss of the floor is an error."""
        status = "ok" if ok else f"BELOW FLOOR ({floor})"
        print(f"pulse bench {self.name}: {line} [{status}{', quick' if self.quick else ''}]",
              flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": self.name, "quick": self.quick, "ok": ok, "summary": line,
                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "commit": _commit(), "machine": f"{platform.node()} {os.cpu_count()} cpus",
                  **self.numbers}
        (RESULTS / f"{self.name}{'-quick' if self.quick else ''}.json").write_text(
            json.dumps(record, indent=2) + "\n")
        return 0 if ok or self.quick else 1


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"
