"""Prometheus metrics of one API process (its own registry, so apps never collide)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import INF, floatToGoString

from pulse.rollups.store import RollupStore

from .lag import LagWatch
from .query import partition_as_of
from .replica import JournalReplica


class ApiMetrics:
    def __init__(self, store: RollupStore, replica: JournalReplica, lag: LagWatch,
                 partitions: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.answers = Counter("pulse_answers", "report answers by source (rollups/lake/mixed)",
                               ["source"], registry=self.registry)
        self._answered: dict[str, Counter] = {}
        self.not_modified = Counter("pulse_http_not_modified", "answers not sent again: 304 "
                                    "for a matching If-None-Match", registry=self.registry)
        self.lake_errors = Counter("pulse_lake_read_errors", "lake queries that failed",
                                   registry=self.registry)
        self.lake_read_errors = 0
        """The same count, ours to read (prometheus-client keeps its value private)."""
        self.replica_ready = Gauge("pulse_replica_ready", "1 once the rollup replica caught up",
                                   registry=self.registry)
        self.replica_ready.set_function(lambda: float(replica.ready))
        self.registry.register(_JournalCollector(store, replica, lag, partitions))

    def answered(self, source: str) -> None:
        """Count an answer by its source; the counter of each source is looked up once
        (`labels()` takes a lock and builds a key each time)."""
        counter = self._answered.get(source)
        if counter is None:
            counter = self._answered[source] = self.answers.labels(source)
        counter.inc()

    def lake_read_failed(self) -> None:
        self.lake_errors.inc()
        self.lake_read_errors += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upper bounds (seconds) of `pulse_http_request_seconds`' buckets."""


class RequestStats:
    """`pulse_http_requests` by route and status and `pulse_http_request_seconds` by
    route, counted in plain dicts and exported at scrape time.

    prometheus-client's `Counter` and `Histogram` take a lock for every increment, four
    per request: 1.2 of the 15.2 us the app spent on an answer it has kept. Here only
    the event loop writes (`observe`), and `/metrics` reads on the same loop."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}
        """route -> requests per latency bucket (`LATENCY_BUCKETS`, then +Inf)."""
        self._seconds: dict[str, float] = {}
        """route -> the sum of its requests' latencies."""

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: seconds <= bound
        self._seconds[route] = self._seconds.get(route, 0.0) + seconds

    def describe(self) -> list:
        return []

    def collect(self):  # type: ignore[no-untyped-def]
        requests = CounterMetricFamily("pulse_http_requests", "HTTP requests by route and status",
                                       labels=["route", "status"])
        for (route, status), n in sorted(self._counts.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("pulse_http_request_seconds", "time to answer, by route",
                                        labels=["route"])
        bounds = [floatToGoString(b) for b in (*LATENCY_BUCKETS, INF)]
        for route, counts in sorted(self._buckets.items()):
            latency.add_metric([route], list(zip(bounds, accumulate(counts), strict=True)),
                               self._seconds[route])
        yield latency


_RECOVERY = (
    ("pulse_checkpoint_offset", "journal offset of the newest checkpoint, per keyed partition",
     "checkpoint_offset"),
    ("pulse_recovery_seconds", "time the partition's worker took to recover it",
     "recovery_seconds"),
    ("pulse_journal_records_folded_at_start", "journal records folded after the checkpoint "
     "when the partition's worker recovered it", "folded_at_start"),
    ("pulse_dedup_events", "event digests the partition holds for deduplication",
     "dedup_events"),
)


class _JournalCollector:
    """What the journal says about the pipeline, read at scrape time."""

    def __init__(self, store: RollupStore, replica: JournalReplica, lag: LagWatch,
                 partitions: int) -> None:
        self.store = store
        self.partitions = partitions
        self.replica = replica
        self.lag = lag

    def describe(self) -> list:
        return []

    def _recovery(self, now: float):  # type: ignore[no-untyped-def]
        """What each partition's worker says of its checkpoints, recovery and dedup."""
        families = {key: GaugeMetricFamily(name, text, labels=["partition"])
                    for name, text, key in _RECOVERY}
        age = GaugeMetricFamily("pulse_checkpoint_age_seconds",
                                "seconds since the newest checkpoint, per keyed partition",
                                labels=["partition"])
        dedup = GaugeMetricFamily("pulse_dedup_bytes", "bytes of dedup state, per keyed "
                                  "partition, in memory and on local disk",
                                  labels=["partition", "where"])
        unavailable = GaugeMetricFamily(
            "pulse_partition_rebuild_needed", "1 while a keyed partition's journal no longer "
            "covers its checkpoints (answers come from the lake)", labels=["partition"])
        for q, info in sorted(self.store.partitions.items()):
            for _, _, key in _RECOVERY:
                if key in info.stats:
                    families[key].add_metric([str(q)], info.stats[key])
            if "checkpoint_written_us" in info.stats:
                age.add_metric([str(q)], max(0.0, now - info.stats["checkpoint_written_us"] / 1e6))
            for where, key in (("memory", "dedup_memory_bytes"), ("disk", "dedup_disk_bytes")):
                if key in info.stats:
                    dedup.add_metric([str(q), where], info.stats[key])
            unavailable.add_metric([str(q)], 1.0 if q in self.replica.unavailable else 0.0)
        yield from families.values()
        yield age
        yield dedup
        yield unavailable

    def collect(self):  # type: ignore[no-untyped-def]
        now = time.time()
        yield self._events()
        yield from self._lake_marks()
        yield from self._as_of(now)
        yield from self._recovery(now)
        consumer_lag = GaugeMetricFamily("pulse_consumer_lag",
                                         "messages not yet committed, per group and partition",
                                         labels=["group", "partition"])
        for group, partitions in sorted(self.lag.lag.items()):
            for p, offsets in sorted(partitions.items()):
                consumer_lag.add_metric([group, str(p)], offsets["lag"])
        yield consumer_lag
        records = GaugeMetricFamily("pulse_replica_journal_records",
                                    "journal records folded by this API process")
        records.add_metric([], self.replica.records)
        yield records

    def _events(self) -> GaugeMetricFamily:
        events = GaugeMetricFamily("pulse_events", "input messages by outcome (journal totals)",
                                   labels=["outcome"])
        totals: dict[str, int] = {}
        for info in self.store.partitions.values():
            for key, value in info.counters.items():
                totals[key] = totals.get(key, 0) + value
        for key, value in sorted(totals.items()):
            events.add_metric([key], value)
        return events

    def _lake_marks(self) -> Iterator[GaugeMetricFamily]:
        """Per input partition, its newest lake mark (any keyed partition may carry it)."""
        by = ["partition"]
        flush = GaugeMetricFamily("pulse_lake_last_flush_timestamp_seconds",
                                  "last lake flush per input partition", labels=by)
        failures = GaugeMetricFamily("pulse_lake_write_failures",
                                     "failed lake writes per input partition (retried)", labels=by)
        failing = GaugeMetricFamily("pulse_lake_write_failing",
                                    "1 while an input partition's lake writes fail", labels=by)
        iceberg_waiting = GaugeMetricFamily(
            "pulse_iceberg_files_waiting", "lake files of an input partition not yet known "
            "to be in the Iceberg tables", labels=by)
        iceberg_failing = GaugeMetricFamily(
            "pulse_iceberg_commit_failing", "1 while the Iceberg commits of an input "
            "partition's worker fail (the lake and the rollups go on)", labels=by)
        marks = self.store.lake_marks()
        for p, mark in sorted(marks.items()):
            if mark.flushed_at_us:  # an idle partition reports progress before any flush
                flush.add_metric([str(p)], mark.flushed_at_us / 1e6)
            failures.add_metric([str(p)], mark.failures)
            failing.add_metric([str(p)], 1.0 if mark.error else 0.0)
            iceberg_waiting.add_metric([str(p)], mark.iceberg_waiting)
            iceberg_failing.add_metric([str(p)], 1.0 if mark.iceberg_error else 0.0)
        yield from (flush, failures, failing, iceberg_waiting, iceberg_failing)

    def _as_of(self, now: float) -> Iterator[GaugeMetricFamily]:
        as_of = GaugeMetricFamily("pulse_as_of_timestamp_seconds",
                                  "time the rollups are complete up to, per keyed partition "
                                  "(measures and journeys; answers use the least)",
                                  labels=["partition"])
        behind = GaugeMetricFamily("pulse_rollups_behind_seconds",
                                   "now minus as_of, per keyed partition", labels=["partition"])
        for q, info in self.store.partitions.items():
            complete = partition_as_of(info, self.partitions)
            if complete is not None:
                t = complete / 1e6
                as_of.add_metric([str(q)], t)
                behind.add_metric([str(q)], max(0.0, now - t))
        yield from (as_of, behind)
