"""Rollups, lake and the brute-force oracle give the same answers, endpoint by endpoint.

Random streams are folded into rollups with 48 h of retention and written to a real
lake with the worker's own writer; random ranges (aligned, unaligned, older than
retention, spanning it) then go through the HTTP app in-process. Whatever mix of
sources answers, the numbers must be the oracle's.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.api.params import iso
from pulse.lakefs import LakeStore
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.local import LocalPartitions
from pulse.rollups.partition import RollupSpec
from pulse.settings import Settings
from pulse.streams.lake_sink import Flush, LakeWriter
from tests import oracle
from tests.strategies import BASE_US, HOUR, STEPS, TENANTS, streams

PARTITIONS = 4
KEYS = {"admin-key-123": "*", "acme-key-1234": "acme"}


def build(stream, lake_root: str, retention_hours: int):
    """Rollups in a store (as the API replica folds them) and the lake, from one stream."""
    settings = Settings(lake=lake_root, partitions=PARTITIONS, funnel_steps=STEPS)
    app = create_app(settings, keys=KEYS)
    local = LocalPartitions(RollupSpec(FunnelSpec(STEPS), 30.0, retention_hours, PARTITIONS))
    flushes: dict[int, Flush] = {}
    next_offset: dict[int, int] = defaultdict(int)
    entries = []
    for i, event in enumerate(stream):
        p = i % 3
        offset = next_offset[p]
        next_offset[p] += 1
        entries.append((p, offset, event))
        flush = flushes.setdefault(p, Flush(p, 0))
        flush.add_event(event, offset)
        flush.last = offset
    for start in range(0, len(entries), 7):  # a few polls
        local.send(entries[start:start + 7])
    local.heartbeat(dict.fromkeys(range(3), BASE_US))
    store = app.state.pulse.store
    for q, records in local.journals.items():  # as the API replica folds them
        fold = store.fold(q)
        for offset, record in enumerate(records):
            fold.feed(record, offset)
    writer = LakeWriter(LakeStore(lake_root), "e0", "events")
    for flush in flushes.values():
        writer.write(flush)
    return app


ranges = st.tuples(st.integers(-100, 100), st.integers(0, HOUR - 1),
                   st.integers(1, 120), st.integers(0, HOUR - 1), st.booleans())


def to_range(spec) -> tuple[int, int]:
    start_hour, start_off, length, end_off, aligned = spec
    frm = BASE_US + start_hour * HOUR + (0 if aligned else start_off)
    to = BASE_US + (start_hour + length) * HOUR + (0 if aligned else end_off)
    return frm, max(to, frm + 1)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(spread_hours=96), st.lists(ranges, min_size=1, max_size=3))
def test_every_endpoint_equals_the_oracle(stream, range_specs):
    with tempfile.TemporaryDirectory() as lake_root:
        app = build(stream, lake_root, retention_hours=48)
        client = TestClient(app)
        admin = {"Authorization": "Bearer admin-key-123"}
        sources = set()
        for spec in range_specs:
            frm, to = to_range(spec)
            for tenant in TENANTS:
                base = {"tenant": tenant, "from": iso(frm), "to": iso(to)}

                def get(path: str, base: dict = base, tenant: str = tenant, **extra: str) -> dict:
                    response = client.get(f"{path}?{urlencode({**base, **extra})}",
                                          headers=admin)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    sources.add(body["source"])
                    assert body["tenant_id"] == tenant
                    return body

                for campaign in ("spring", "winter"):
                    got = get(f"/analytics/campaign/{campaign}")
                    want = oracle.campaign_overview(stream, tenant, campaign, frm, to, STEPS,
                                                    30.0)
                    assert oracle.approx_equal(
                        {k: got[k] for k in want}, want), (tenant, campaign, frm, to)
                assert oracle.approx_equal(
                    {k: v for k, v in get("/analytics/overview").items() if k in
                     ("conversations", "engagement", "intents", "funnel")},
                    oracle.overview(stream, tenant, None, False, frm, to, STEPS, 30.0))
                intents = get("/analytics/intents", campaign="spring")
                want_intents = oracle.intents_report(stream, tenant, "spring", True, frm, to)
                assert oracle.approx_equal(
                    {"total": intents["total"], "intents": intents["intents"]}, want_intents)
                assert get("/analytics/funnel")["steps"] == oracle.funnel_report(
                    stream, tenant, None, False, frm, to, STEPS)
                assert oracle.approx_equal(get("/analytics/usage")["usage"],
                                           oracle.usage_report(stream, tenant, frm, to))
                assert get("/analytics/campaigns")["campaigns"] == oracle.campaigns_report(
                    stream, tenant, frm, to)
                for metric in ("conversations", "engaged", "intents", "intent:buy",
                               "funnel_entries"):
                    for interval, width in (("hour", HOUR), ("day", 24 * HOUR)):
                        body = get("/analytics/timeseries", metric=metric, interval=interval,
                                   campaign="winter")
                        want_points = oracle.timeseries(stream, tenant, "winter", True, metric,
                                                        width, frm, to, STEPS, 30.0)
                        assert [(p["t"], p["value"]) for p in body["points"]] == [
                            (iso(t), v) for t, v in want_points], (metric, interval)
        assert sources  # every example answered something


@settings(max_examples=5, deadline=None)
@given(streams(spread_hours=24))
def test_aligned_ranges_inside_retention_come_from_the_rollups_of_every_partition(stream):
    """The rollups answer once every partition is folded, though one tenant's events are
    spread over all of them; the lake answers the unaligned edges."""
    with tempfile.TemporaryDirectory() as lake_root:
        client = TestClient(build(stream, lake_root, retention_hours=10_000))
        admin = {"Authorization": "Bearer admin-key-123"}
        frm, to = BASE_US - 30 * HOUR, BASE_US + 30 * HOUR
        for (a, b), source in (((frm, to), "rollups"), ((frm + 5, to), "mixed")):
            query = urlencode({"tenant": "acme", "from": iso(a), "to": iso(b)})
            body = client.get(f"/analytics/overview?{query}", headers=admin).json()
            assert body["source"] == source
            assert body["as_of"] is not None
            assert oracle.approx_equal(
                {k: body[k] for k in ("conversations", "engagement", "intents", "funnel")},
                oracle.overview(stream, "acme", None, False, a, b, STEPS, 30.0))
