"""`pulse replay` rebuilds from the lake exactly the rollups the live worker built."""

from __future__ import annotations

import time

import msgspec
import pytest

from pulse.rollups import report
from pulse.rollups.store import ALL, RollupStore
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from tests import oracle
from tests.deployment import Pulse, counters, read_all
from tests.streams.test_pipeline import HOUR, STEPS, make_stream

pytestmark = pytest.mark.broker


def answers(store: RollupStore, now_us: int) -> dict:
    """Everything a report could show, over a wide range, for every tenant and campaign."""
    base = now_us - now_us % HOUR
    h0, h1 = base // HOUR - 100, base // HOUR + 2
    out = {}
    for tenant in ("acme", "globex", "initech"):
        for campaign in (ALL, None, "spring", "summer", "fall"):
            m = store.total(tenant, campaign, h0, h1)
            out[(tenant, str(campaign))] = {**msgspec.to_builtins(report.overview(m, STEPS)),
                                            "usage": report.usage(m)}
        out[(tenant, "campaigns")] = sorted(
            (c, m.conversations) for c, m in store.campaigns(tenant, h0, h1).items())
    return out


def accounting(store: RollupStore) -> dict:
    c = counters(store)
    return {k: c.get(k, 0) for k in ("read", "accepted", "duplicates", "dead_letters")}


def test_replay_equals_live_twice_and_the_stream_carries_on(pulse: Pulse):
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=21, n=4000, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    pulse.produce(messages)
    live = pulse.rollups(until=read_all(len(messages)))
    pulse.lake_rows(len(valid))
    assert worker.stop() == 0  # drains the lake and commits

    refused = pulse.start("replay")
    assert refused.process.wait(60) == 1
    assert "Stop every worker first" in refused.log()

    for _ in range(2):
        replay = pulse.start("replay", "--force")
        assert replay.process.wait(120) == 0, replay.log()
        rebuilt = pulse.rollups(until=read_all(len(messages)))
        assert accounting(rebuilt) == accounting(live)
        assert oracle.approx_equal(answers(rebuilt, now_us), answers(live, now_us))

    # A worker started after the replay continues exactly from the lake's offsets.
    more, _, _ = make_stream(seed=22, n=1500, now_us=now_us)
    more = [(k, v.replace(b'"evt-', b'"more-'), p) for k, v, p in more] + messages[:300]
    pulse.start_worker()
    pulse.produce(more)
    total = len(messages) + len(more)
    final = pulse.rollups(until=read_all(total))
    every = [r for r in (decode_event(v, now_us) for _, v, _ in messages + more)
             if isinstance(r, Event)]
    base = now_us - now_us % HOUR
    frm, to = base - 80 * HOUR, base + 2 * HOUR
    for tenant in ("acme", "globex", "initech"):
        assert oracle.approx_equal(
            report.overview(final.total(tenant, ALL, frm // HOUR, to // HOUR), STEPS),
            oracle.overview(every, tenant, None, False, frm, to, STEPS, 30.0))
    assert accounting(final)["read"] == total


ENDPOINTS = ("/analytics/overview", "/analytics/campaign/spring", "/analytics/intents",
             "/analytics/funnel", "/analytics/campaigns", "/analytics/usage")


def test_after_a_replay_every_answer_says_how_complete_it_is(pulse: Pulse):
    """No traffic after the replay: the rebuild knows how far the lake is complete, so
    `as_of` is a time from the first answer on, on every endpoint, tenant and range."""
    from tests.api_process import iso, start_api

    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=23, n=1500, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    pulse.produce(messages)
    pulse.rollups(until=read_all(len(messages)))
    pulse.lake_rows(len(valid))
    produced_by_us = time.time_ns() // 1000
    assert worker.stop() == 0

    replay = pulse.start("replay", "--force")
    assert replay.process.wait(120) == 0, replay.log()
    pulse.start_worker()
    api = start_api(pulse)
    base = now_us - now_us % HOUR
    ranges = [(base - 80 * HOUR, base + 2 * HOUR), (base - 30 * HOUR - 17, base - 3 * HOUR + 5)]
    for path in ENDPOINTS:
        for tenant in ("acme", "globex", "initech"):
            for frm, to in ranges:
                status, body = api.get(path, tenant=tenant, **{"from": iso(frm), "to": iso(to)})
                assert status == 200, body
                assert body["as_of"] is not None, (path, tenant, body["source"])
                assert body["as_of"] >= iso(produced_by_us - 10_000_000), body["as_of"]
    status, body = api.get("/analytics/timeseries", tenant="acme", metric="conversations",
                           interval="hour", **{"from": iso(ranges[0][0]), "to": iso(ranges[0][1])})
    assert status == 200 and body["as_of"] is not None
