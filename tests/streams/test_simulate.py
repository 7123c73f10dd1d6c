"""`pulse simulate`: a seed gives one exact stream, and that stream becomes exact rollups,
lake rows and dead letters when produced through a real broker and worker."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from pulse.rollups import report
from pulse.rollups.store import ALL
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event, Rejected
from pulse.settings import Settings
from pulse.streams.actors import OPTED_OUT, SECOND, TenantActor
from pulse.streams.simulate import run_simulate
from pulse.streams.traffic import (
    SimOptions,
    Simulated,
    generate,
    parse_start,
    plan_options,
)
from tests import oracle
from tests.helpers import Pulse, counters, event_rows, read_all

HOUR = 3_600_000_000
STEPS = ("picked_up", "interested", "qualified")
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
"""Pure tests run against a fixed clock; the end-to-end test uses the real one."""


def options(seed: int = 7, n: int = 20_000, now: datetime = NOW, **shares: float) -> SimOptions:
    """A backfill of `n` messages over the two days before `now`."""
    return plan_options(tenants=3, campaigns=3, customers=100, rate=0, events=n, seed=seed,
                        start=None, duplicates=shares.get("duplicates", 0.05),
                        late=shares.get("late", 0.05), invalid=shares.get("invalid", 0.02),
                        steps=STEPS, now=now)


def take(opts: SimOptions, n: int) -> list[Simulated]:
    return list(itertools.islice(generate(opts), n))


def wall_us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def _event(message: Simulated) -> Event:
    decoded = decode_event(message.value, 2**62)
    assert isinstance(decoded, Event), decoded
    return decoded


# ---- the stream, without Kafka -------------------------------------------------------


def test_same_seed_and_start_give_the_same_bytes_ids_included():
    first, again = take(options(seed=7), 3000), take(options(seed=7), 3000)
    assert [(m.key, m.value, m.kind, m.at_us) for m in first] == [
        (m.key, m.value, m.kind, m.at_us) for m in again]
    other = take(options(seed=8), 3000)
    assert [m.value for m in first] != [m.value for m in other]
    later = take(options(seed=7, now=NOW + timedelta(days=1)), 3000)
    ids = {_event(m).id for m in first if m.kind != "invalid"}
    assert not ids & {_event(m).id for m in later if m.kind != "invalid"}


def test_shares_of_duplicates_late_and_invalid_are_as_asked():
    messages = take(options(duplicates=0.05, late=0.1, invalid=0.02), 20_000)
    kinds = Counter(m.kind for m in messages)
    valid = [m for m in messages if m.kind == "valid"]
    assert kinds["invalid"] / len(messages) == pytest.approx(0.02, rel=0.2)
    assert kinds["duplicate"] / len(valid) == pytest.approx(0.05, rel=0.15)
    assert sum(m.late for m in valid) / len(valid) == pytest.approx(0.1, rel=0.15)


def test_each_message_is_what_it_says_it_is():
    messages = take(options(), 20_000)
    now_us = wall_us(NOW)
    sent: set[bytes] = set()
    reasons: Counter[str] = Counter()
    for m in messages:
        decoded = decode_event(m.value, now_us)
        if m.kind == "invalid":
            assert isinstance(decoded, Rejected), m
            reasons[decoded.reason] += 1
            continue
        assert isinstance(decoded, Event), (m, decoded)
        assert m.key.decode() == (decoded.customer_id or decoded.tenant_id)
        assert decoded.occurred_us <= m.at_us <= now_us
        if m.kind == "valid":
            assert (m.at_us - decoded.occurred_us >= HOUR) == m.late
        if m.kind == "duplicate":
            assert m.value in sent  # the very same bytes again
        sent.add(m.value)
    assert set(reasons) >= {"invalid_json", "missing_field", "wrong_type", "bad_value",
                            "future_timestamp"}


def test_the_stream_is_in_event_time_order_with_every_timestamp_form():
    messages = take(options(), 20_000)
    assert all(a.at_us <= b.at_us for a, b in itertools.pairwise(messages))
    on_time = [m for m in messages if m.kind == "valid" and not m.late]
    times = [_event(m).occurred_us for m in on_time]
    assert times == sorted(times)
    stamps = [json.loads(m.value)["occurred_at"] for m in on_time]
    forms = Counter("epoch ms" if isinstance(s, int) else "Z" if s.endswith("Z") else "offset"
                    for s in stamps)
    assert forms["Z"] > forms["epoch ms"] > 0 and forms["offset"] > 0


def test_a_run_spreads_over_the_past_and_moves_with_the_clock_when_paced():
    backfill = options(n=3000)
    assert backfill.start == NOW - timedelta(days=2)
    last = take(backfill, 3000)[-1]
    assert wall_us(NOW) - HOUR < last.at_us <= wall_us(NOW)
    live = plan_options(tenants=1, campaigns=1, customers=5, rate=200, events=None, seed=1,
                        start=None, duplicates=0, late=0, invalid=0, steps=STEPS, now=NOW)
    assert (live.start, live.spacing_s) == (NOW, 1 / 200)
    assert take(live, 2001)[-1].at_us == pytest.approx(wall_us(NOW) + 10 * SECOND, abs=SECOND)


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-01T09:00:00Z", datetime(2025, 3, 1, 9, tzinfo=UTC)),
    ("2025-03-01T09:00:00+05:30", datetime(2025, 3, 1, 3, 30, tzinfo=UTC)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
])
def test_start_is_rfc3339_or_a_date(text: str, expected: datetime):
    assert parse_start(text) == expected


@pytest.mark.parametrize(("change", "flag"), [
    ({"start": "2025-03-01T09:00:00"}, "UTC offset"),
    ({"start": "yesterday"}, "--start"),
    ({"start": "2025-03-10T13:30:00Z"}, "future"),
    ({"tenants": 0}, "--tenants"),
    ({"late": 1.5}, "--late"),
    ({"rate": -1}, "--rate"),
])
def test_bad_options_name_their_flag(change: dict, flag: str):
    args = dict(tenants=1, campaigns=1, customers=1, rate=0.0, events=10, seed=1, start=None,
                duplicates=0.0, late=0.0, invalid=0.0, steps=STEPS, now=NOW)
    with pytest.raises(ValueError, match=flag):
        plan_options(**{**args, **change})


def test_customers_walk_the_funnel_in_order_and_most_stop_early():
    rnd = random.Random(3)
    tenant = TenantActor(0, 3, 50, STEPS, "run", rnd)
    drafts = [d for k in range(20_000) for d in tenant.step(k * 10 * SECOND, rnd)]
    journeys: dict[tuple, list[str]] = defaultdict(list)
    campaigns: dict[str, set] = defaultdict(set)
    durations = []
    for d in drafts:
        f = d.fields
        if f["event_type"] == "funnel_step":
            journeys[(f["campaign_id"], f["customer_id"])].append(f["label"])
        if f["event_type"] in ("call_ended", "chat_ended"):
            durations.append(f["value"])
        if f["event_type"] != "usage":
            campaigns[f["customer_id"]].add(f["campaign_id"])
    for labels in journeys.values():
        steps = [label for label in labels if label != OPTED_OUT]
        assert steps == list(STEPS[: len(steps)]), labels
    reached = Counter(len([x for x in labels if x != OPTED_OUT]) for labels in journeys.values())
    at_least = [sum(n for k, n in reached.items() if k >= step) for step in (1, 2, 3)]
    assert at_least[0] > at_least[1] > at_least[2] > 0
    assert at_least[2] < at_least[0] / 2
    assert None in {c for cs in campaigns.values() for c in cs}  # a few have no campaign
    assert {len(cs - {None}) for cs in campaigns.values()} <= {0, 1, 2}
    assert 0.05 < sum(v < 30 for v in durations) / len(durations) < 0.45


def test_usage_adds_up_to_the_tenants_conversations():
    rnd = random.Random(4)
    tenant = TenantActor(0, 2, 20, STEPS, "run", rnd)
    drafts = [d for k in range(5000) for d in tenant.step(k * SECOND, rnd)]
    calls = sum(d.fields["value"] for d in drafts if d.fields["event_type"] == "call_ended")
    usage = Counter()
    for d in drafts:
        if d.fields["event_type"] == "usage":
            assert d.key == tenant.tenant_id and "customer_id" not in d.fields
            usage[d.fields["category"]] += d.fields["value"]
    assert usage["call_minutes"] + tenant.call_seconds / 60 == pytest.approx(calls / 60,
                                                                              abs=0.01)
    assert usage["chat_messages"] > 0


def test_no_broker_is_a_clear_error_naming_the_variable(capsys: pytest.CaptureFixture[str]):
    from tests.helpers import free_port

    settings = Settings.from_env({"PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    code = run_simulate(settings, tenants=1, campaigns=1, customers=1, rate=0, duration=None,
                        events=10, seed=1, start=None, duplicates=0, late=0, invalid=0,
                        broker_timeout=1)
    assert code == 1
    assert "PULSE_KAFKA_BOOTSTRAP" in capsys.readouterr().err


# ---- through the broker and a worker --------------------------------------------------


@pytest.mark.broker
def test_a_simulated_run_becomes_exact_rollups_lake_rows_and_dead_letters(pulse: Pulse):
    now = datetime.now(UTC)
    start = (now - timedelta(days=2, hours=1)).replace(minute=0, second=0, microsecond=0)
    start_text = start.isoformat().replace("+00:00", "Z")
    n = 3000
    worker = pulse.start_worker()
    sim = pulse.start("simulate", "--events", str(n), "--rate", "0", "--seed", "7",
                      "--start", start_text)

    opts = plan_options(tenants=3, campaigns=3, customers=200, rate=0, events=n, seed=7,
                        start=start_text, duplicates=0.02, late=0.02, invalid=0.005,
                        steps=pulse.settings.funnel_steps, now=now)
    messages = take(opts, n)
    now_us = wall_us(datetime.now(UTC))
    decoded = [decode_event(m.value, now_us) for m in messages]
    valid = [e for e in decoded if isinstance(e, Event)]
    invalid = [m.value for m, d in zip(messages, decoded, strict=True) if isinstance(d, Rejected)]
    assert len(invalid) == sum(m.kind == "invalid" for m in messages) > 0
    unique = oracle.unique(valid)
    assert len(unique) < len(valid)

    assert sim.process.wait(120) == 0, sim.log()
    assert f"done: {n:,} messages" in sim.log()
    store = pulse.rollups(until=read_all(n), timeout=120)
    totals = counters(store)
    assert totals["read"] == n
    assert totals["dead_letters"] == len(invalid)
    assert totals["accepted"] == len(unique)
    assert totals["duplicates"] == len(valid) - len(unique)
    assert totals.get("conflicting_duplicates", 0) == 0

    base = wall_us(start)
    tenants = sorted({e.tenant_id for e in unique})
    campaigns = sorted({(e.tenant_id, e.campaign_id) for e in unique if e.campaign_id})
    assert len(tenants) == 3 and len(campaigns) == 9
    steps = pulse.settings.funnel_steps
    for frm, to in [(base - 4 * 24 * HOUR, base + 3 * 24 * HOUR),
                    (base + 12 * HOUR, base + 30 * HOUR), (base - 24 * HOUR, base + HOUR)]:
        h0, h1 = frm // HOUR, to // HOUR
        for tenant, campaign in campaigns:
            got = report.overview(store.total(tenant, campaign, h0, h1), steps)
            want = oracle.campaign_overview(valid, tenant, campaign, frm, to, steps, 30.0)
            assert oracle.approx_equal(got, want), (tenant, campaign, frm, to)
        for tenant in tenants:
            everything = store.total(tenant, ALL, h0, h1)
            assert everything.conversations > 0 and report.funnel(everything, steps)[0]["customers"]
            assert oracle.approx_equal(
                {**report.overview(everything, steps), "usage": report.usage(everything)},
                {**oracle.overview(valid, tenant, None, False, frm, to, steps, 30.0),
                 "usage": oracle.usage_report(valid, tenant, frm, to)}), (tenant, frm, to)

    assert pulse.lake_rows(len(valid)) == len(valid)
    assert pulse.lake_events() == event_rows(unique)

    dlq = pulse.dead_letter_topic(expected=len(invalid))
    assert sorted(r.value or b"" for r in dlq) == sorted(invalid)
    assert worker.alive()
