"""End to end through a real broker and worker: rollups, lake and DLQ equal the definitions."""

from __future__ import annotations

import json
import random
import time

import msgspec
import pytest

from pulse.rollups import report
from pulse.rollups.store import ALL
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from tests import oracle
from tests.deployment import Pulse, counters, event_rows, read_all

HOUR = 3_600_000_000
STEPS = ("picked_up", "interested", "qualified")
pytestmark = pytest.mark.broker


def make_stream(
    seed: int, n: int, now_us: int
) -> tuple[list[tuple], list[Event], dict[bytes, str]]:
    """(messages to produce, valid events in arrival order, bad value -> expected reason)."""
    rnd = random.Random(seed)
    base = now_us - now_us % HOUR
    messages: list[tuple] = []
    for i in range(n):
        kind = rnd.choice(["call_ended", "chat_ended", "intent_detected", "funnel_step",
                           "funnel_step", "tag_changed", "usage"])
        customer = f"cust-{rnd.randint(0, 40)}"
        hour = rnd.choice([rnd.randint(-72, 0), rnd.randint(-3, 0)])  # some late by days
        offset = rnd.choice([0, 1, HOUR - 1, rnd.randint(0, HOUR - 1)])  # window edges
        body: dict = {
            "id": f"evt-{i}",
            "tenant_id": rnd.choice(["acme", "globex", "initech"]),
            "event_type": kind,
            "occurred_at": (base + hour * HOUR + offset) // 1000 if rnd.random() < 0.5
            else _rfc3339(base + hour * HOUR + offset, rnd),
            "campaign_id": rnd.choice([None, "spring", "summer", "fall"]),
        }
        if kind != "usage":
            body["customer_id"] = customer
        if kind in ("call_ended", "chat_ended"):
            body["value"] = rnd.choice([0, 29.5, 30, 30.0, 31, rnd.uniform(0, 600)])
            if rnd.random() < 0.1:
                body["channel"] = "chat" if kind == "call_ended" else "call"
        elif kind == "intent_detected":
            body["label"] = rnd.choice(["buy", "cancel", "question", "callback"])
        elif kind == "funnel_step":
            body["label"] = rnd.choice(STEPS + ("voicemail",))
        elif kind == "tag_changed":
            body["label"] = rnd.choice(["vip", "churn-risk"])
        else:
            body["category"] = rnd.choice(["call_minutes", "chat_messages"])
            body["value"] = rnd.choice([1, 2.5, rnd.uniform(0, 10)])
        if rnd.random() < 0.05:
            body["metadata"] = {"source": "test", "n": i}
        if rnd.random() < 0.05:
            body["unknown_field"] = "ignored"
        raw = json.dumps(body).encode()
        messages.append((customer.encode(), raw, None))
        if rnd.random() < 0.08:  # a producer retry, landing on another partition
            messages.append((b"retry", raw, rnd.randint(0, 3)))

    bad = {
        b"{not json": "invalid_json",
        b"\xff\xfe": "invalid_json",
        b"": "invalid_json",
        b"[1, 2]": "not_an_object",
        json.dumps({"id": "b1", "tenant_id": "acme", "event_type": "call_ended",
                    "customer_id": "c", "value": 3}).encode(): "missing_field",
        json.dumps({"id": "b2", "tenant_id": "acme", "event_type": "usage",
                    "occurred_at": 1, "value": 3}).encode(): "missing_field",
        json.dumps({"id": 7, "tenant_id": "acme", "event_type": "tag_changed",
                    "occurred_at": 1, "customer_id": "c", "label": "x"}).encode(): "wrong_type",
        json.dumps({"id": "b3", "tenant_id": "ac me", "event_type": "tag_changed",
                    "occurred_at": 1, "customer_id": "c", "label": "x"}).encode(): "bad_value",
        json.dumps({"id": "b4", "tenant_id": "acme", "event_type": "call_ended",
                    "occurred_at": 1, "customer_id": "c", "value": -1}).encode(): "bad_value",
        json.dumps({"id": "b5", "tenant_id": "acme", "event_type": "sms_sent",
                    "occurred_at": 1, "customer_id": "c"}).encode(): "bad_value",
        json.dumps({"id": "b6", "tenant_id": "acme", "event_type": "tag_changed",
                    "occurred_at": "2026-01-01T00:00:00", "customer_id": "c",
                    "label": "x"}).encode(): "bad_timestamp",
        json.dumps({"id": "b7", "tenant_id": "acme", "event_type": "tag_changed",
                    "occurred_at": 10**17, "customer_id": "c", "label": "x"}).encode():
            "bad_timestamp",
        json.dumps({"id": "b8", "tenant_id": "acme", "event_type": "tag_changed",
                    "occurred_at": (now_us // 1000) + 2 * 3600 * 1000, "customer_id": "c",
                    "label": "x"}).encode(): "future_timestamp",
        json.dumps({"id": "b9", "tenant_id": "acme", "event_type": "tag_changed",
                    "occurred_at": 1, "customer_id": "c", "label": "x",
                    "pad": "x" * 70_000}).encode(): "too_large",
        b'{"id":"b10","tenant_id":"acme","event_type":"usage","occurred_at":1,'
        b'"category":"m","value":1e999}': "bad_value",
    }
    for value in bad:
        messages.insert(rnd.randint(0, len(messages)), (None, value, None))

    valid = []
    for _, raw, _ in messages:
        result = decode_event(raw, now_us)
        if isinstance(result, Event):
            valid.append(result)
    return messages, valid, bad


def _rfc3339(us: int, rnd: random.Random) -> str:
    from pulse.schemas.lake import us_to_datetime

    dt = us_to_datetime(us)
    if rnd.random() < 0.5:
        return dt.isoformat().replace("+00:00", "Z")
    from datetime import timedelta, timezone

    return dt.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()


def test_events_become_exact_rollups_lake_rows_and_dead_letters(pulse: Pulse):
    now_us = time.time_ns() // 1000
    messages, valid, bad = make_stream(seed=3, n=3000, now_us=now_us)
    unique = oracle.unique(valid)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    assert pulse.produce(messages) == len(messages)

    store = pulse.rollups(until=read_all(len(messages)), timeout=90)
    totals = counters(store)
    assert totals["read"] == len(messages)
    assert totals["dead_letters"] == len(bad)
    assert totals["accepted"] == len(unique)
    assert totals["duplicates"] == len(valid) - len(unique)
    assert totals.get("conflicting_duplicates", 0) == 0

    # Rollups: every report over aligned ranges equals the brute-force oracle.
    base = now_us - now_us % HOUR
    for frm, to in [(base - 80 * HOUR, base + 2 * HOUR), (base - 24 * HOUR, base - 5 * HOUR),
                    (base - 3 * HOUR, base + HOUR)]:
        h0, h1 = frm // HOUR, to // HOUR
        for tenant in ("acme", "globex", "initech"):
            for campaign in ("spring", "summer", "fall"):
                got = report.overview(store.total(tenant, campaign, h0, h1), STEPS)
                want = oracle.campaign_overview(valid, tenant, campaign, frm, to, STEPS, 30.0)
                assert oracle.approx_equal(got, want), (tenant, campaign, frm, to)
            everything = store.total(tenant, ALL, h0, h1)
            assert msgspec.to_builtins(report.intent_list(everything)) == oracle.intents_report(
                valid, tenant, None, False, frm, to)["intents"]
            assert msgspec.to_builtins(report.funnel(everything, STEPS)) == oracle.funnel_report(
                valid, tenant, None, False, frm, to, STEPS)
            assert oracle.approx_equal(report.usage(everything),
                                       oracle.usage_report(valid, tenant, frm, to))

    # The lake, read with plain DuckDB and deduplicated as contract section 5 says.
    assert pulse.lake_rows(len(valid)) == len(valid)
    assert pulse.lake_events() == event_rows(unique)
    (raw_rows, distinct_offsets), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM {events}")
    assert raw_rows == distinct_offsets == len(valid)
    types = dict(pulse.lake_sql(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {events})"))
    assert types["occurred_at"] == types["ingested_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["value"] == "DOUBLE" and types["kafka_offset"] == "BIGINT"

    # Dead letters: byte for byte on the DLQ topic with both headers, and in the lake.
    dlq = pulse.dead_letter_topic(expected=len(bad))
    assert sorted(r.value or b"" for r in dlq) == sorted(bad)
    for record in dlq:
        headers = dict(record.headers)
        assert headers["pulse-error-reason"].decode() == bad[record.value or b""]
        assert headers["pulse-error"]
    lake_dead = pulse.lake_sql("SELECT raw, reason FROM {dead_letters}")
    assert sorted((bytes(raw), reason) for raw, reason in lake_dead) == sorted(bad.items())
    assert worker.alive()


def test_a_backlog_is_in_the_lake_once_read_and_a_trickle_waits_for_its_flush(pulse: Pulse):
    """The tail of a catch-up is written when it is read, not after the flush interval
    (an hour here); an event that arrives once the worker has caught up waits for it,
    so that a trickle does not become a file per event."""
    now_us = time.time_ns() // 1000
    messages, valid, _ = make_stream(seed=5, n=2000, now_us=now_us)
    pulse.env["PULSE_LAKE_FLUSH_SECONDS"] = "3600"
    pulse.ensure_topics()
    assert pulse.produce(messages) == len(messages)
    worker = pulse.start_worker()
    pulse.rollups(until=read_all(len(messages)), timeout=90)
    assert pulse.lake_rows(len(valid), timeout=30) == len(valid)

    late = json.dumps({"id": "after-catch-up", "tenant_id": "acme", "event_type": "tag_changed",
                       "customer_id": "c1", "label": "vip", "occurred_at": now_us // 1000})
    pulse.produce([(b"c1", late.encode(), 0)])
    pulse.rollups(until=read_all(len(messages) + 1), timeout=60)
    time.sleep(1.0)
    assert pulse.lake_rows(len(valid) + 1, timeout=0.5) == len(valid)

    assert worker.stop() == 0  # a clean stop writes what it holds
    assert pulse.lake_rows(len(valid) + 1, timeout=5) == len(valid) + 1
