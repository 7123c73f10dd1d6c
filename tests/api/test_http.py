"""The API end to end: a real broker, worker and two `pulse api` processes."""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import quote

import pytest

from pulse.api.params import iso
from tests import oracle
from tests.api.conftest import Stack
from tests.streams.test_pipeline import HOUR, STEPS, make_stream

pytestmark = pytest.mark.broker

ADMIN, ACME, GLOBEX = "admin-key-0001", "acme-key-00001", "globex-key-001"
REPORTS = [
    "/analytics/campaign/spring?",
    "/analytics/overview?",
    "/analytics/overview?campaign=summer&",
    "/analytics/intents?",
    "/analytics/funnel?campaign=fall&",
    "/analytics/timeseries?metric=conversations&interval=hour&",
    "/analytics/timeseries?metric=intent:buy&interval=day&",
    "/analytics/timeseries?metric=funnel_entries&interval=hour&",
    "/analytics/campaigns?",
    "/analytics/usage?",
]


def window(stack: Stack) -> tuple[int, int, str]:
    base = stack.now_us - stack.now_us % HOUR
    frm, to = base - 80 * HOUR, base + 2 * HOUR
    return frm, to, f"from={quote(iso(frm))}&to={quote(iso(to))}"


def test_every_report_answers_a_tenant_key_with_the_oracles_numbers(stack: Stack):
    frm, to, rng = window(stack)
    for path in REPORTS:
        status, body, headers = stack.get(path + rng, key=ACME)
        assert status == 200, (path, body)
        assert headers["content-type"].startswith("application/json")
        assert body["tenant_id"] == "acme"
        assert body["source"] in ("rollups", "lake", "mixed")
        assert body["as_of"] is not None
        assert (body["from"], body["to"]) == (iso(frm), iso(to))
    _, spring, _ = stack.get("/analytics/campaign/spring?" + rng, key=ACME)
    want = oracle.campaign_overview(stack.valid, "acme", "spring", frm, to, STEPS, 30.0)
    assert oracle.approx_equal({k: spring[k] for k in want}, want)
    assert spring["campaign_id"] == "spring"
    _, campaigns, _ = stack.get("/analytics/campaigns?" + rng, key=ACME)
    assert campaigns["campaigns"] == oracle.campaigns_report(stack.valid, "acme", frm, to)
    _, usage, _ = stack.get("/analytics/usage?" + rng, key=ACME)
    assert oracle.approx_equal(usage["usage"], oracle.usage_report(stack.valid, "acme", frm, to))


def test_keys_see_their_tenant_only_and_admins_name_one(stack: Stack):
    _, _, rng = window(stack)
    for path in REPORTS:
        url = path + rng
        for key, code in ((None, 401), ("not-a-key-at-all", 401)):
            status, body, _ = stack.get(url, key=key)
            assert status == code and body["error"]["code"] == "unauthorized", (url, body)
        status, body, _ = stack.get(url + "&tenant=globex", key=ACME)
        assert status == 403 and body["error"]["code"] == "forbidden"
        assert "globex" not in str(body)
        assert stack.get(url + "&tenant=acme", key=ACME)[0] == 200
        status, body, _ = stack.get(url, key=ADMIN)
        assert status == 400 and body["error"]["code"] == "tenant_required"
        for tenant, key in (("acme", ACME), ("globex", GLOBEX)):
            as_admin = stack.get(url + f"&tenant={tenant}", key=ADMIN)[1]
            as_tenant = stack.get(url, key=key)[1]
            # as_of is the watermark at answer time: it moves on as the worker flushes.
            assert {**as_admin, "as_of": None} == {**as_tenant, "as_of": None}
    for path in ("/analytics/status", "/analytics/tenants"):
        assert stack.get(path, key=ACME)[0] == 403
        assert stack.get(path, key=None)[0] == 401
        assert stack.get(path, key=ADMIN)[0] == 200
    assert stack.get("/analytics/tenants")[1]["tenants"] == ["acme", "globex", "initech"]
    assert stack.get("/analytics/me", key=ACME)[1] == {"role": "tenant", "tenant_id": "acme"}
    assert stack.get("/analytics/me")[1] == {"role": "admin", "tenant_id": None}
    # The dashboard passes the key in the query string.
    status, body, _ = stack.get(f"/analytics/overview?{rng}&key={ACME}", key=None)
    assert status == 200 and body["tenant_id"] == "acme"


@pytest.mark.parametrize(("path", "status", "code", "says"), [
    ("/analytics/overview?to=2026-01-02", 400, "missing_parameter", "`from` is required"),
    ("/analytics/overview?from=yesterday&to=2026-01-02", 400, "bad_time", "RFC 3339"),
    ("/analytics/overview?from=2026-01-01T00:00:00&to=2026-01-02", 400, "bad_time",
     "needs a UTC offset"),
    ("/analytics/overview?from=2026-01-02&to=2026-01-02", 400, "bad_range", "before `to`"),
    ("/analytics/overview?from=2000-01-01&to=2026-01-02", 400, "range_too_long", "3700 days"),
    ("/analytics/timeseries?metric=calls&interval=hour&from=2026-01-01&to=2026-01-02", 400,
     "bad_metric", "conversations, engaged"),
    ("/analytics/timeseries?metric=engaged&interval=week&from=2026-01-01&to=2026-01-02", 400,
     "bad_interval", "`hour` or `day`"),
    ("/analytics/timeseries?metric=engaged&interval=hour&from=2025-01-01&to=2026-01-02", 400,
     "range_too_long", "use interval=day"),
    ("/analytics/nope", 404, "not_found", "/openapi.json"),
    ("/analytics/overview?tenant=a/b&from=2026-01-01&to=2026-01-02", 400, "bad_tenant",
     "letters, digits"),
])
def test_errors_are_json_and_say_what_to_fix(stack: Stack, path: str, status: int, code: str,
                                             says: str):
    got, body, headers = stack.get(path + ("&tenant=acme" if "tenant=" not in path else ""))
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == code
    assert says in body["error"]["message"]


def test_wrong_methods_get_a_json_405(stack: Stack):
    status, body, _ = stack.get("/analytics/overview", method="POST")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


def test_status_accounts_for_every_message(stack: Stack):
    _, status, _ = stack.get("/analytics/status")
    totals = status["totals"]
    unique = oracle.unique(stack.valid)
    assert totals["read"] == len(stack.messages)
    assert totals["dead_letters"] == len(stack.bad)
    assert totals["accepted"] == len(unique)
    assert totals["duplicates"] == len(stack.valid) - len(unique)
    assert status["accounting_holds"] is True
    assert status["ready"] is True and status["as_of"]
    deadline = time.monotonic() + 15  # the flush is reported with the next forwarded batch
    while not status["lake"]["last_flush"] or set(status["lag"]["consumer"]) != {"ingest",
                                                                                   "rollups"}:
        assert time.monotonic() < deadline, status["lake"]
        time.sleep(0.2)
        status = stack.get("/analytics/status")[1]


def test_health_metrics_openapi_and_the_page(stack: Stack):
    assert stack.get("/healthz", key=None)[:2] == (200, {"status": "ok"})
    assert stack.get("/readyz", key=None)[:2] == (200, {"status": "ready"})
    _, _, rng = window(stack)
    status, overview, _ = stack.get(f"/analytics/overview?{rng}", key=ACME)
    assert status == 200, overview
    status, metrics, _ = stack.get("/metrics", key=None)
    assert status == 200
    assert 'pulse_http_requests_total{route="/analytics/overview",status="200"}' in metrics
    assert f'pulse_events{{outcome="read"}} {len(stack.messages)}' in metrics
    assert "pulse_lake_last_flush_timestamp_seconds" in metrics
    assert f'pulse_answers_total{{source="{overview["source"]}"}}' in metrics
    assert 'pulse_consumer_lag{group="ingest",partition="0"}' in metrics
    _, spec, _ = stack.get("/openapi.json", key=None)
    assert spec["openapi"].startswith("3.1")
    for path in ("/analytics/campaign/{campaign_id}", "/analytics/intents", "/analytics/funnel",
                 "/analytics/timeseries", "/analytics/campaigns", "/analytics/usage",
                 "/analytics/status", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    status, page, headers = stack.get("/", key=None)
    assert status == 200 and headers["content-type"].startswith("text/html")


def test_keys_never_reach_the_access_log(stack: Stack):
    _, _, rng = window(stack)
    assert stack.get(f"/analytics/usage?{rng}&key={ACME}", key=None)[0] == 200
    assert stack.get(f"/analytics/usage?{rng}&%6Bey={GLOBEX}", key=None)[0] == 200
    page = f"/analytics/funnel/customers?step=1&outcome=reached&limit=1&{rng}"
    cursor = stack.get(page, key=ACME)[1]["next_cursor"]
    assert stack.get(f"{page}&cursor={cursor}", key=ACME)[0] == 200
    deadline = time.monotonic() + 10
    while True:  # a request is logged once its answer has gone: wait for the last one
        logs = "".join(p.log_path.read_text() for p in stack.pulse.procs
                       if p.log_path.name.startswith("api-"))
        if "cursor=***" in logs or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "/analytics/usage" in logs and "key=***" in logs
    assert ACME not in logs and ADMIN not in logs and GLOBEX not in logs
    assert cursor not in logs and "cursor=***" in logs


def test_a_corrupt_lake_file_is_a_503_naming_it_to_admins_only(stack: Stack):
    folder = os.path.join(stack.pulse.settings.lake, "events", "tenant_id=brokenco",
                          "date=2026-01-01")
    os.makedirs(folder, exist_ok=True)
    bad = os.path.join(folder, "0000000000aa-p0000-000000000000-000000000009.parquet")
    with open(bad, "wb") as fh:
        fh.write(b"PAR1 this is not parquet")
    path = "/analytics/overview?tenant=brokenco&from=2026-01-01&to=2026-01-01T00:30:00Z"
    status, body, _ = stack.get(path)
    assert status == 503 and body["error"]["code"] == "lake_unreadable"
    assert bad in body["error"]["message"]
    # The API itself keeps answering.
    assert stack.get("/healthz", key=None)[0] == 200


def test_two_api_processes_answer_identically_while_events_flow(stack: Stack):
    """Both replicas fold the same journal: answers only grow while events flow, and
    are identical, endpoint by endpoint, once both have caught up."""
    _, _, rng = window(stack)
    more, _, _ = make_stream(seed=32, n=3000, now_us=stack.now_us)
    more = [(k, v.replace(b'"evt-', b'"flow-').replace(b'"acme"', b'"flowco"'), p)
            for k, v, p in more]
    producer = threading.Thread(target=lambda: [
        (stack.pulse.produce(more[i:i + 300]), time.sleep(0.2))
        for i in range(0, len(more), 300)])
    producer.start()
    seen = [0, 0]
    while producer.is_alive():
        for api in (0, 1):
            total = stack.get("/analytics/status", api=api)[1]["totals"]["read"]
            assert total >= seen[api]
            seen[api] = total
        time.sleep(0.1)
    producer.join()
    target = len(stack.messages) + len(more)
    deadline = time.monotonic() + 60
    for api in (0, 1):
        while stack.get("/analytics/status", api=api)[1]["totals"]["read"] < target:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    # Every message is read, but funnel steps may still travel to their journeys'
    # partitions and as_of moves with each heartbeat: ask until both agree.
    for path in REPORTS:
        for tenant in ("acme", "flowco", "globex"):
            while True:
                a = stack.get(path + rng + f"&tenant={tenant}", api=0)[1]
                b = stack.get(path + rng + f"&tenant={tenant}", api=1)[1]
                if a == b:
                    break
                assert time.monotonic() < deadline, (path, tenant, {
                    k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
                time.sleep(0.2)


INSIGHTS = [
    "/analytics/time-to-convert?order=sequence&window=86400&",
    "/analytics/funnel/customers?step=2&outcome=dropped&limit=5&",
    "/analytics/heatmap?tz=Europe/Berlin&campaign=spring&",
    "/analytics/breakdown?by=metadata.source&",
    "/analytics/breakdown?by=channel&limit=1&",
    "/analytics/overview?compare=previous&order=sequence&",
    "/analytics/timeseries?metric=conversations&interval=day&tz=Asia/Kolkata&",
]


def test_insight_answers_through_real_processes(stack: Stack):
    frm, to, rng = window(stack)
    for path in INSIGHTS:
        status, body, _ = stack.get(path + rng, key=ACME)
        assert status == 200 and body["tenant_id"] == "acme", (path, body)
        assert body["as_of"] is not None
        assert stack.get(path + rng + "&tenant=globex", key=ACME)[0] == 403
        assert stack.get(path + rng, key=None)[0] == 401
        as_admin = stack.get(path + rng + "&tenant=acme", key=ADMIN)[1]
        # as_of moves on as the worker flushes, and a page cursor carries it.
        assert ({**as_admin, "as_of": None, "next_cursor": None}
                == {**body, "as_of": None, "next_cursor": None}), path
    _, ttc, _ = stack.get(f"/analytics/time-to-convert?order=sequence&window=86400&{rng}",
                          key=ACME)
    assert oracle.approx_equal(ttc["steps"], oracle.time_to_convert(
        stack.valid, "acme", None, False, frm, to, STEPS, "sequence", 86400))
    _, by_source, _ = stack.get(f"/analytics/breakdown?by=metadata.source&{rng}", key=ACME)
    want = oracle.breakdown(stack.valid, "acme", None, False, frm, to, "metadata.source", 25,
                            30.0)
    assert oracle.approx_equal({"groups": by_source["groups"], "other": None}, want)
    assert [g["value"] for g in by_source["groups"]] == [None, "test"]
    status, csv, headers = stack.get(f"/analytics/funnel/customers?step=1&outcome=reached&"
                                     f"format=csv&{rng}", key=ACME)
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert len(csv.splitlines()) - 1 == len(oracle.funnel_customers(
        stack.valid, "acme", None, False, frm, to, STEPS, 1, "reached"))
