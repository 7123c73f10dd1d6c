"""The insight answers (funnel options and what holds them) equal the brute-force oracle.

As in the parity test, random streams are folded into rollups with 48 h of retention
and written to a real lake with the worker's writer, and the answers go through the
HTTP app in-process. Random streams hold steps before t1, late first steps, copies and
labels that are not steps; windows are drawn among the durations (whole seconds) from
t1 that the stream's journeys reach steps in. What random streams hit only by chance is
forced in tests of its own: equal timestamps within a journey, a late event that changes
reach under `order=sequence`, a window exactly equal to a counted journey's duration (and
one second short of it), and breakdown groups that tie.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.api.params import iso
from pulse.rollups.reach import ORDERS
from pulse.settings import Settings
from tests import oracle
from tests.api.test_parity import build, ranges, to_range
from tests.strategies import (
    BASE_US,
    HOUR,
    SECOND,
    STEPS,
    TENANTS,
    edge_journeys,
    streams,
    tied_conversations,
)

ADMIN = {"Authorization": "Bearer admin-key-123"}


def durations_s(stream: list, tenant: str, order: str,
                customers: set[str] | None = None) -> list[int]:
    """The positive whole-second durations reach(k) - t1 of the tenant's journeys (of
    `customers` only, if given) under `order`: the windows a duration can equal."""
    out = set()
    for (_, customer), times in oracle.journey_steps(stream, tenant).items():
        if customers is None or customer in customers:
            r = oracle.reach(times, STEPS, order)
            out |= {(t - r[0]) // SECOND for t in r[1:]
                    if t is not None and t > r[0] and (t - r[0]) % SECOND == 0}
    return sorted(out)


def windows(durations: list[int]) -> st.SearchStrategy[int | None]:
    """No window, one equal to a duration (reached: `<=`), or one second short of it."""
    exact = st.sampled_from(durations) if durations else st.just(1)
    short = [d - 1 for d in durations if d > 1]
    return st.none() | exact | (st.sampled_from(short) if short else st.just(1))


class Asker:
    def __init__(self, client: TestClient, tenant: str, frm: int, to: int) -> None:
        self.client = client
        self.tenant = tenant
        self.base = {"tenant": tenant, "from": iso(frm), "to": iso(to)}

    def __call__(self, path: str, **extra: object) -> dict:
        query = {**self.base, **{k: v for k, v in extra.items() if v is not None}}
        response = self.client.get(f"{path}?{urlencode(query)}", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["tenant_id"] == self.tenant
        return body


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(spread_hours=96), st.data())
def test_insight_answers_equal_the_oracle(stream, data):
    frm, to = to_range(data.draw(ranges))
    tenant = data.draw(st.sampled_from(TENANTS))
    order = data.draw(st.sampled_from(ORDERS))
    window = data.draw(windows(durations_s(stream, tenant, order)))
    options = {"order": order, "window": window}
    with tempfile.TemporaryDirectory() as lake_root:
        get = Asker(TestClient(build(stream, lake_root, retention_hours=48)), tenant, frm, to)
        want_funnel = oracle.funnel_report(stream, tenant, None, False, frm, to, STEPS, order,
                                           window)
        got = get("/analytics/funnel", **options)
        assert got["steps"] == want_funnel
        if order != "any" or window is not None:  # step times only the lake holds
            assert got["source"] == "lake"
        overview = get("/analytics/campaign/spring", compare="previous", **options)
        before = (2 * frm - to, frm)
        for (a, b), got in (((frm, to), overview), (before, overview["previous"])):
            want = oracle.overview(stream, tenant, "spring", True, a, b, STEPS, 30.0, order,
                                   window)
            assert oracle.approx_equal({k: got[k] for k in want}, want)
            assert (got["from"], got["to"]) == (iso(a), iso(b))
        intents = get("/analytics/intents", compare="previous")
        assert oracle.approx_equal(
            {"total": intents["previous"]["total"], "intents": intents["previous"]["intents"]},
            oracle.intents_report(stream, tenant, None, False, *before))
        assert intents["total"] == oracle.intents_report(stream, tenant, None, False, frm,
                                                         to)["total"]
        usage = get("/analytics/usage", compare="previous")
        assert oracle.approx_equal(usage["previous"]["usage"],
                                   oracle.usage_report(stream, tenant, *before))
        assert "previous" not in get("/analytics/usage")
        ttc = get("/analytics/time-to-convert", **options)
        assert ttc["source"] == "lake"
        assert oracle.approx_equal(ttc["steps"], oracle.time_to_convert(
            stream, tenant, None, False, frm, to, STEPS, order, window))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(max_events=30, spread_hours=96), edge_journeys(), st.data())
def test_forced_funnel_edges_equal_the_oracle(noise, edges, data):
    """Journeys on the definitions' edges (`edge_journeys`), their late events arriving
    last, in a range around one of them; the window equals one of its durations or falls
    one second short."""
    on_time, late = edges
    stream = noise + on_time + late
    for event in late:  # what the strategy promises: the late S2 changes sequence only
        key = (event.campaign_id, event.customer_id)
        before = oracle.journey_steps(on_time, event.tenant_id)[key]
        after = oracle.journey_steps(on_time + late, event.tenant_id)[key]
        assert oracle.reach(before, STEPS, "sequence")[1:] == [None, None]
        assert None not in oracle.reach(after, STEPS, "sequence")
        assert oracle.reach(before, STEPS, "any") == oracle.reach(after, STEPS, "any")
    chosen = data.draw(st.sampled_from(on_time))
    tenant, t1 = chosen.tenant_id, min(e.occurred_us for e in on_time if e.label == STEPS[0]
                                       and e.customer_id == chosen.customer_id)
    frm = t1 - data.draw(st.sampled_from([0, 1]) | st.integers(0, 48 * HOUR))
    to = t1 + 1 + data.draw(st.sampled_from([0, 1]) | st.integers(0, 48 * HOUR))
    if data.draw(st.booleans()):  # whole hours: the rollups answer the default funnel
        frm, to = frm - frm % HOUR, to + (-to) % HOUR
    order = data.draw(st.sampled_from(ORDERS))
    window = data.draw(windows(durations_s(stream, tenant, order, {chosen.customer_id})))
    options = {"order": order, "window": window}
    with tempfile.TemporaryDirectory() as lake_root:
        get = Asker(TestClient(build(stream, lake_root, retention_hours=48)), tenant, frm, to)
        assert get("/analytics/funnel", **options)["steps"] == oracle.funnel_report(
            stream, tenant, None, False, frm, to, STEPS, order, window)
        assert oracle.approx_equal(get("/analytics/time-to-convert", **options)["steps"],
                                   oracle.time_to_convert(stream, tenant, None, False, frm, to,
                                                          STEPS, order, window))
        for step, outcome in ((1, "reached"), (2, "reached"), (3, "reached"), (2, "dropped"),
                              (3, "dropped")):
            body = get("/analytics/funnel/customers", step=step, outcome=outcome, limit=1000,
                       **options)
            assert [(c["campaign_id"], c["customer_id"], c["entered_at"], c["reached_step"])
                    for c in body["customers"]] == [
                (c, u, iso(t), k) for c, u, t, k in oracle.funnel_customers(
                    stream, tenant, None, False, frm, to, STEPS, step, outcome, order, window)]


ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
TRANSITIONS = ("2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z", "2026-03-08T07:00:00Z",
               "2026-11-01T06:00:00Z")
"""DST changes (Berlin, New York): streams are moved so that they straddle one."""


def shifted(stream: list, by: int) -> list:
    return [msgspec.structs.replace(e, occurred_us=e.occurred_us + by) for e in stream]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(spread_hours=60), st.data())
def test_time_zone_answers_equal_the_oracle(stream, data):
    moved = datetime.fromisoformat(data.draw(st.sampled_from(TRANSITIONS)))
    shift = int(moved.timestamp()) * 1_000_000 - BASE_US
    stream = shifted(stream, shift)
    frm, to = (t + shift for t in to_range(data.draw(ranges)))
    tenant = data.draw(st.sampled_from(TENANTS))
    tz = data.draw(st.sampled_from(ZONES))
    with tempfile.TemporaryDirectory() as lake_root:
        app = build(stream, lake_root, retention_hours=48)
        get = Asker(TestClient(app), tenant, frm, to)
        for metric, interval in (("conversations", "hour"), ("engaged", "day"),
                                 ("funnel_entries", "day")):
            body = get("/analytics/timeseries", metric=metric, interval=interval, tz=tz)
            assert body["tz"] == tz
            assert [(p["t"], p["value"]) for p in body["points"]] == oracle.local_timeseries(
                stream, tenant, None, False, metric, interval, tz, frm, to, STEPS, 30.0)
        body = get("/analytics/heatmap", tz=tz, campaign="spring")
        assert body["tz"] == tz and len(body["cells"]) == 168
        assert body["cells"] == oracle.heatmap(stream, tenant, "spring", True, frm, to, tz, 30.0)
        first, last = (oracle.local(t, tz).date().isoformat() for t in (frm, to))
        if first < last:  # dates are local midnights
            a, b = oracle.local_midnight(first, tz), oracle.local_midnight(last, tz)
            body = get("/analytics/timeseries", metric="conversations", interval="day", tz=tz,
                       **{"from": first, "to": last})
            assert (body["from"], body["to"]) == (iso(a), iso(b))
            assert [(p["t"], p["value"]) for p in body["points"]] == oracle.local_timeseries(
                stream, tenant, None, False, "conversations", "day", tz, a, b, STEPS, 30.0)

JSON_VALUES = (st.none() | st.booleans() | st.integers(-2**60, 2**60)
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.sampled_from([3, 3.0, -0.0, 0, 1e21, 2.5, 1e-7, 0.1]) | st.text(max_size=3)
               | st.sampled_from(["3", "true", "", "é", "a/b"])
               | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=2),
                                                                      st.integers(), max_size=1))
RAW_METADATA = ('{"agent": 1e400}', '{"agent": 12345678901234567890123}', '{"agent": 30e-1}',
                '{"agent": -9007199254740993}', '{"agent": "x", "other": 1}', "{}")


@st.composite
def metadata(draw: st.DrawFn) -> str | None:
    if draw(st.booleans()):
        return draw(st.none() | st.sampled_from(RAW_METADATA))
    return json.dumps({"agent": draw(JSON_VALUES)})


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(spread_hours=96), st.data())
def test_breakdowns_equal_the_oracle(stream, data):
    given_to = {e.id: data.draw(metadata()) for e in stream  # copies of an event stay equal
                if e.event_type in ("call_ended", "chat_ended")}
    stream = [msgspec.structs.replace(e, metadata=given_to[e.id]) if e.id in given_to else e
              for e in stream]
    frm, to = to_range(data.draw(ranges))
    tenant = data.draw(st.sampled_from(TENANTS))
    limit = data.draw(st.integers(1, 3))
    with tempfile.TemporaryDirectory() as lake_root:
        get = Asker(TestClient(build(stream, lake_root, retention_hours=48)), tenant, frm, to)
        for by, campaign in (("channel", "winter"), ("campaign", None), ("metadata.agent", None)):
            body = get("/analytics/breakdown", by=by, limit=limit, campaign=campaign)
            want = oracle.breakdown(stream, tenant, campaign, campaign is not None, frm, to, by,
                                    limit, 30.0)
            assert body["by"] == by
            assert oracle.approx_equal({"groups": body["groups"], "other": body["other"]}, want)
            if by.startswith("metadata."):
                assert body["source"] == "lake"

@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(max_events=20, spread_hours=96), st.data())
def test_breakdown_ties_are_ranked_by_value_null_last(noise, data):
    """Every group ties (`tied_conversations`), so only the order by value decides which
    groups are listed and which go to `other`; `limit` cuts anywhere among them."""
    frm, to = to_range(data.draw(ranges))
    tenant = data.draw(st.sampled_from(TENANTS))
    outside = [e for e in noise if not frm <= e.occurred_us < to]  # keeps the ties
    ties = data.draw(tied_conversations(tenant, frm, to))
    stream = data.draw(st.permutations(outside + ties + ties[: len(ties) // 3]))
    with tempfile.TemporaryDirectory() as lake_root:
        get = Asker(TestClient(build(stream, lake_root, retention_hours=48)), tenant, frm, to)
        for by in ("channel", "campaign", "metadata.agent"):
            limit = data.draw(st.integers(1, 5))
            body = get("/analytics/breakdown", by=by, limit=limit)
            want = oracle.breakdown(stream, tenant, None, False, frm, to, by, limit, 30.0)
            assert len({g["conversations"] for g in want["groups"]}) == 1  # they do tie
            assert oracle.approx_equal({"groups": body["groups"], "other": body["other"]}, want)


@pytest.mark.parametrize(("path", "query", "code", "says"), [
    ("/analytics/funnel", {"order": "random"}, "bad_order", "`any` or `sequence`"),
    ("/analytics/overview", {"window": "0"}, "bad_window", "from 1 to"),
    ("/analytics/campaign/spring", {"window": "ten"}, "bad_window", "whole number of seconds"),
    ("/analytics/time-to-convert", {"window": "1e3"}, "bad_window", "whole number"),
    ("/analytics/timeseries", {"metric": "funnel_entries", "order": "x"}, "bad_order", "`any`"),
    ("/analytics/overview", {"compare": "next"}, "bad_compare", "`previous`"),
    ("/analytics/heatmap", {"tz": "Mars/Olympus"}, "bad_tz", "IANA time zone"),
    ("/analytics/heatmap", {"tz": "Pacific/Kiritimati", "from": "9999-12-28",
                            "to": "9999-12-31"}, "bad_range", "9999-12-29"),
    ("/analytics/timeseries", {"metric": "engaged", "tz": "Asia/Kolkata", "from": "0001-01-01",
                               "to": "0001-01-05"}, "bad_range", "0001-01-03"),
    ("/analytics/timeseries", {"metric": "engaged", "tz": "europe/berlin"}, "bad_tz", "IANA"),
    ("/analytics/breakdown", {}, "missing_parameter", "`by` is required"),
    ("/analytics/breakdown", {"by": "agent"}, "bad_breakdown", "metadata.<key>"),
    ("/analytics/breakdown", {"by": "metadata."}, "bad_breakdown", "1 to 128 characters"),
    ("/analytics/breakdown", {"by": "metadata." + "k" * 129}, "bad_breakdown", "1 to 128"),
    ("/analytics/breakdown", {"by": "channel", "limit": "101"}, "bad_limit", "from 1 to 100"),
    ("/analytics/breakdown", {"by": "channel", "limit": "0"}, "bad_limit", "from 1 to 100"),
    ("/analytics/usage", {"compare": "previous", "from": "0001-01-01T00:00:01Z",
                          "to": "0001-01-01T00:00:03Z"}, "bad_compare", "before year 1"),
])
def test_bad_options_name_the_parameter_and_what_it_accepts(tmp_path, path, query, code, says):
    client = TestClient(create_app(Settings(lake=str(tmp_path)), keys={"k-0000001": "acme"}))
    response = client.get(path, params={"from": "2026-11-01", "to": "2026-11-02", **query},
                          headers={"Authorization": "Bearer k-0000001"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert says in response.json()["error"]["message"]
