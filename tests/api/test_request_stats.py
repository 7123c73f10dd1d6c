"""RequestStats exports what prometheus-client's own Counter and Histogram would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pulse.api.metrics import LATENCY_BUCKETS, RequestStats


def _lines(registry: CollectorRegistry) -> list[str]:
    """The exposition's sample lines, in order of name and labels; the `_created`
    series (a start time per label set) are prometheus-client's alone."""
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if "_created" not in line)


def test_the_same_samples_as_prometheus_clients_counter_and_histogram():
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    requests = Counter("pulse_http_requests", "HTTP requests by route and status",
                       ["route", "status"], registry=theirs)
    latency = Histogram("pulse_http_request_seconds", "time to answer, by route", ["route"],
                        buckets=LATENCY_BUCKETS, registry=theirs)
    stats = RequestStats()
    ours.register(stats)
    rng = random.Random(7)
    for _ in range(3000):
        route = rng.choice(["/analytics/overview", "/healthz", "unmatched"])
        status = rng.choice([200, 304, 404, 500])
        seconds = rng.choice([*LATENCY_BUCKETS, 0.0, 11.0, rng.random() / 10])  # bounds too
        requests.labels(route, str(status)).inc()
        latency.labels(route).observe(seconds)
        stats.observe(route, status, seconds)
    assert _lines(ours) == _lines(theirs)
