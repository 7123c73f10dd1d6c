"""What every peer job of `pulse bench peers` shares: its command line, its answer, its clock.

Each job is the same computation written for one system: read the topic from the
beginning, decode JSON, skip invalid messages, drop duplicates by (tenant_id, id), and
count per (tenant, campaign, UTC hour) and per (tenant, intent label, UTC hour). A job
runs as a process of its own (`python -m pulse.benchmarks.peers_jobs.<job> --bootstrap
... --topic ... --expect N --out result.json`), so that its peak RSS is its own, and
writes its final counts as JSON for the harness to compare with its oracle.

Only the plumbing lives here: how a job is told what to read, what a valid event is
(the same rule for every peer, so that they all compute one answer), and the answer's
file. How each job reads, decodes, deduplicates and counts is its system's own.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..harness import rss_mb

HOUR_MS = 3_600_000
INTENT = "intent_detected"
PROGRESS_EVERY_S = 1.0

CampaignCount = tuple[str, str | None, int, int]
"""(tenant_id, campaign_id or None, hour since the epoch, events)."""
IntentCount = tuple[str, str, int, int]
"""(tenant_id, intent label, hour since the epoch, intents)."""


@dataclass(frozen=True)
class JobArgs:
    bootstrap: str
    topic: str
    expect: int
    """Messages on the topic: a job that has read this many has read them all."""
    out: Path
    group: str
    state_dir: Path


def parse_args(description: str) -> JobArgs:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker")
    parser.add_argument("--topic", required=True, help="input topic, read from the beginning")
    parser.add_argument("--expect", type=int, required=True, help="messages on the topic")
    parser.add_argument("--out", type=Path, required=True, help="where to write the answer")
    parser.add_argument("--group", default="", help="consumer group / application id")
    parser.add_argument("--state-dir", type=Path, default=None, help="local state, if any")
    ns = parser.parse_args()
    group = ns.group or f"peers-{os.getpid()}"
    state_dir = ns.state_dir or ns.out.parent / f"{group}-state"
    return JobArgs(ns.bootstrap, ns.topic, ns.expect, ns.out, group, state_dir)


class Fields(NamedTuple):
    """What the counts need of one valid event."""

    tenant_id: str
    id: str
    occurred_ms: int
    campaign_id: str | None
    label: str | None
    """The intent label of an `intent_detected` event, else None."""

    @property
    def hour(self) -> int:
        return self.occurred_ms // HOUR_MS


def fields(doc: Any) -> Fields | None:
    """The fields of a decoded message, or None if it is not a valid event.

    The same rule for every peer: a JSON object with string `id`, `tenant_id` and
    `event_type`, an integer `occurred_at` (epoch milliseconds), a string or null
    `campaign_id`, and a string `label` on intents. On the benchmark's workload it
    accepts exactly the messages Pulse's contract accepts (the invalid ones are
    truncated JSON), which the harness's oracle checks independently.
    """
    if not isinstance(doc, dict):
        return None
    tenant, event_id, kind = doc.get("tenant_id"), doc.get("id"), doc.get("event_type")
    at, campaign = doc.get("occurred_at"), doc.get("campaign_id")
    if not (isinstance(tenant, str) and isinstance(event_id, str) and isinstance(kind, str)
            and type(at) is int and (campaign is None or isinstance(campaign, str))):
        return None
    label = None
    if kind == INTENT:
        label = doc.get("label")
        if not isinstance(label, str):
            return None
    return Fields(tenant, event_id, at, campaign, label)


class Clock:
    """From the moment a job may fetch to its final counts in hand; progress for the harness.

    A job calls `start()` where its system says its partitions are assigned (or its
    dataflow starts); where a system has no such hook, the first message in hand
    starts the clock, which for a job bound by its per-message cost is the same to a
    few milliseconds. Starting at the first message would flatter a job whose first
    fetch brings a large part of the topic at once. Group joins are left out for every
    job alike. The progress file lets the harness say how far a job got when it runs
    out of time.
    """

    def __init__(self, args: JobArgs) -> None:
        self.progress_path = args.out.with_suffix(".progress")
        self.first: float | None = None
        self.read = 0
        self._said = 0.0

    def start(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def tick(self, messages: int = 1) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.read += messages
        if now - self._said >= PROGRESS_EVERY_S:
            self._said = now
            tmp = self.progress_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"read": self.read, "seconds": now - self.first}))
            tmp.replace(self.progress_path)

    def seconds(self) -> float:
        return 0.0 if self.first is None else time.perf_counter() - self.first


def write_answer(args: JobArgs, clock: Clock, campaigns: Iterable[CampaignCount],
                 intents: Iterable[IntentCount], **extra: Any) -> None:
    """Write the job's answer atomically: the harness waits for this file."""
    seconds = clock.seconds()
    answer = {
        "read": clock.read, "seconds": seconds, "peak_rss_mb": rss_mb("self", "VmHWM"),
        "campaigns": [list(c) for c in campaigns], "intents": [list(i) for i in intents],
        **extra,
    }
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(answer))
    tmp.replace(args.out)
