"""`pulse simulate`: a seed gives one exact stream, and that stream becomes exact rollups,
lake rows and dead letters when produced through a real broker and worker."""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from pulse.rollups import report
from pulse.rollups.store import ALL
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event, Rejected
from pulse.settings import Settings
from pulse.streams import traffic
from pulse.streams.actors import OPTED_OUT, Draft, Touch
from pulse.streams.rhythm import SECOND
from pulse.streams.simulate import run_simulate
from pulse.streams.traffic import (
    MESSAGES_PER_CUSTOMER_DAY,
    SimOptions,
    Simulated,
    World,
    generate,
    parse_start,
    plan_options,
)
from tests import oracle
from tests.deployment import Pulse, counters, event_rows, read_all

HOUR = 3_600_000_000
STEPS = ("picked_up", "interested", "qualified")
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
"""Pure tests run against a fixed clock; the end-to-end test uses the real one."""


def options(seed: int = 7, n: int = 20_000, now: datetime = NOW, **shares: float) -> SimOptions:
    """A load run (`--rate 0 --events n`): `n` messages over the two days before `now`."""
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
    assert (live.start, live.history_messages) == (NOW, 0)
    assert take(live, 2001)[-1].at_us == pytest.approx(wall_us(NOW) + 10 * SECOND, abs=SECOND)
    both = plan_options(tenants=1, campaigns=1, customers=5, rate=200, events=None, seed=1,
                        start=None, duplicates=0, late=0, invalid=0, steps=STEPS, now=NOW,
                        backfill_days=1)
    assert both.start == NOW - timedelta(days=1)
    after = take(both, both.history_messages + 2001)[both.history_messages:]
    assert after[0].at_us >= wall_us(NOW)
    assert after[-1].at_us == pytest.approx(wall_us(NOW) + 10 * SECOND, abs=SECOND)


def test_a_full_pool_leaves_no_pile_of_cancelled_touches(monkeypatch: pytest.MonkeyPatch):
    live = plan_options(tenants=2, campaigns=2, customers=30, rate=200, events=None, seed=3,
                        start=None, duplicates=0.02, late=0.02, invalid=0.01, steps=STEPS,
                        now=NOW)
    pending, events = {}, {}
    for compact_at in (10**9, 200):  # never, then often
        monkeypatch.setattr(traffic, "COMPACT_AT", compact_at)
        world = World(live, random.Random(live.seed))
        # 75 s at 200/s: with 60 customers, they keep getting in touch early
        events[compact_at] = [repr(world.next_event(live.start_us + k * SECOND // 200))
                              for k in range(15_000)]
        stale = sum(isinstance(e[2], Touch) and e[2].cancelled for e in world.pending)
        pending[compact_at] = (stale, len(world.pending) - stale)
    (piled, _), (left, kept) = pending[10**9], pending[200]
    assert piled > 3 * kept and left <= kept, pending
    assert events[200] == events[10**9]  # dropping them changes nothing that is sent


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
    ({"backfill_days": -1}, "--backfill-days"),
    ({"backfill_days": 400}, "--backfill-days"),
])
def test_bad_options_name_their_flag(change: dict, flag: str):
    args = dict(tenants=1, campaigns=1, customers=1, rate=0.0, events=10, seed=1, start=None,
                duplicates=0.0, late=0.0, invalid=0.0, steps=STEPS, now=NOW)
    with pytest.raises(ValueError, match=flag):
        plan_options(**{**args, **change})


# ---- a month of history, in-process on a small world --------------------------------


@dataclass(frozen=True)
class Month:
    """A 30-day backfill of a small world: its options, world and unique events."""

    options: SimOptions
    zones: dict[str, ZoneInfo]
    events: list[Event]
    journeys: dict[tuple, dict[str, int]]
    """(tenant, campaign, customer) -> step -> first time (only funnel steps)."""


@functools.cache
def month() -> Month:
    opts = plan_options(tenants=2, campaigns=3, customers=60, rate=200, events=None, seed=11,
                        start=None, duplicates=0, late=0, invalid=0, steps=STEPS, now=NOW,
                        backfill_days=30)  # the world's own shape: no producer mistakes
    world = World(opts, random.Random(opts.seed))  # the very world `generate` builds first
    zones = {t.tenant_id: ZoneInfo(str(t.calendar.zone)) for t in world.tenants}
    messages = take(opts, opts.history_messages)
    events = [_event(m) for m in messages]
    journeys: dict[tuple, dict[str, int]] = defaultdict(dict)
    for e in events:
        if e.event_type == "funnel_step" and e.label in STEPS:
            steps = journeys[(e.tenant_id, e.campaign_id, e.customer_id)]
            steps[e.label] = min(steps.get(e.label, e.occurred_us), e.occurred_us)
    return Month(opts, zones, events, dict(journeys))


def conversations(m: Month) -> list[Event]:
    return [e for e in m.events if e.event_type in ("call_ended", "chat_ended")]


def local(e: Event, m: Month) -> datetime:
    return datetime.fromtimestamp(e.occurred_us / 1e6, m.zones[e.tenant_id])


def test_a_month_of_history_covers_every_day_up_to_now():
    m = month()
    assert m.options.history_messages == round(30 * MESSAGES_PER_CUSTOMER_DAY * 60 * 2)
    first, last = m.options.start_us, m.options.live_start_us
    assert last - first == 30 * 24 * HOUR and last == wall_us(NOW)
    days = Counter(datetime.fromtimestamp(e.occurred_us / 1e6, UTC).date()
                   for e in conversations(m) if first <= e.occurred_us)
    assert len(days) == 31  # 30 days back from noon touch 31 dates
    assert min(days.values()) > 0
    history = take(m.options, m.options.history_messages + 1)
    assert all(first <= x.at_us < last for x in history[:-1])
    assert last - HOUR < history[-2].at_us and history[-1].at_us >= last


def test_calls_cluster_at_the_hours_people_answer_and_less_at_weekends():
    m = month()
    calls = Counter()
    chats = Counter()
    for e in conversations(m):
        when = local(e, m)
        (calls if e.channel == "call" else chats)[(when.weekday() >= 5, when.hour)] += 1
    office = sum(calls[(False, h)] for h in range(9, 17)) / 8
    night = sum(calls[(False, h)] for h in range(0, 6)) / 6
    assert office > 8 * night
    per_day = {kind: {w: sum(n for (weekend, _), n in counts.items() if weekend == w)
                      / (8 if w else 22) for w in (False, True)}  # ~8 weekend days in 30
               for kind, counts in (("call", calls), ("chat", chats))}
    assert per_day["call"][True] < 0.6 * per_day["call"][False]
    assert per_day["chat"][True] / per_day["chat"][False] > (
        per_day["call"][True] / per_day["call"][False])


def test_conversations_carry_agents_and_scripts_whose_engagement_differs():
    m = month()
    by_agent: dict[tuple, list[bool]] = defaultdict(list)
    scripts: dict[str, set] = defaultdict(set)
    tagged = 0
    for e in conversations(m):
        meta = json.loads(e.metadata) if e.metadata else {}
        tagged += "agent" in meta
        by_agent[(e.tenant_id, e.channel, meta.get("agent"))].append((e.value or 0) >= 30)
        if e.campaign_id:
            scripts[e.campaign_id].add(meta.get("script"))
    assert tagged > 0.85 * len(conversations(m))
    for tenant in m.zones:
        for channel, agents in (("call", 4), ("chat", 2)):
            rates = [sum(v) / len(v) for (t, c, agent), v in by_agent.items()
                     if (t, c) == (tenant, channel) and agent and len(v) >= 50]
            assert len(rates) == agents, (tenant, channel, rates)
        voice = [sum(v) / len(v) for (t, c, agent), v in by_agent.items()
                 if (t, c) == (tenant, "call") and agent]
        assert max(voice) - min(voice) > 0.08, (tenant, voice)
    for campaign, names in scripts.items():
        theme = campaign.split("-", 1)[1]
        assert names - {None} == {f"{theme}-v1", f"{theme}-v2"}


def test_journeys_walk_the_funnel_in_order_over_hours_to_days():
    m = month()
    labels: dict[tuple, list[str]] = defaultdict(list)
    for e in m.events:
        if e.event_type == "funnel_step":
            labels[(e.tenant_id, e.campaign_id, e.customer_id)].append(e.label)
    for seen in labels.values():
        steps = [label for label in seen if label != OPTED_OUT]
        assert steps == list(STEPS[: len(steps)]), seen
    old = [j for j in m.journeys.values()
           if "picked_up" in j and j["picked_up"] < m.options.live_start_us - 7 * 24 * HOUR]
    reached = [sum(all(s in j for s in STEPS[:k]) for j in old) for k in (1, 2, 3)]
    assert reached[0] > reached[1] > reached[2] > 0
    assert reached[2] < reached[0] / 4
    stalled = reached[1] - reached[2]
    assert stalled > reached[2] / 2  # many stop after "interested", with days to go on
    to_qualify = [j["qualified"] - j["picked_up"] for j in old if "qualified" in j]
    assert sum(d < 12 * HOUR for d in to_qualify) > 0
    assert sum(d > 2 * 24 * HOUR for d in to_qualify) > len(to_qualify) / 10
    assert None in {campaign for _, campaign, _ in labels}  # walk-ins, without a campaign


def test_campaigns_start_at_different_times_and_hear_different_intents():
    m = month()
    first: dict[str, int] = {}
    intents: dict[str, Counter] = defaultdict(Counter)
    for e in m.events:
        if e.campaign_id:
            first[e.campaign_id] = min(first.get(e.campaign_id, e.occurred_us), e.occurred_us)
        if e.event_type == "intent_detected" and e.campaign_id:
            intents[e.campaign_id][e.label] += 1
    assert len(first) == 6
    for tenant in m.zones:
        starts = sorted(t for c, t in first.items() if c.startswith(f"{tenant}-"))
        assert starts[0] < m.options.start_us + 24 * HOUR
        assert starts[-1] > m.options.start_us + 3 * 24 * HOUR
    mixes = [{label: n / sum(c.values()) for label, n in c.items()}
             for c in intents.values() if sum(c.values()) >= 300]
    assert len(mixes) >= 2
    distance = max(sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b)) / 2
                   for a, b in itertools.combinations(mixes, 2))
    assert distance > 0.05


def test_usage_adds_up_to_each_tenants_conversations():
    opts = plan_options(tenants=2, campaigns=2, customers=20, rate=0, events=None, seed=4,
                        start=None, duplicates=0, late=0, invalid=0, steps=STEPS, now=NOW,
                        backfill_days=3)
    world = World(opts, random.Random(opts.seed))
    drafts = [world.next_event(opts.start_us + k * 60 * SECOND) for k in range(3 * 24 * 60)]
    drafts += [item for _, _, item in world.pending if isinstance(item, Draft)]
    for tenant in world.tenants:
        mine = [d.fields for d in drafts if d.fields["tenant_id"] == tenant.tenant_id]
        calls = sum(f["value"] for f in mine if f["event_type"] == "call_ended")
        usage = Counter()
        for f in mine:
            if f["event_type"] == "usage":
                assert "customer_id" not in f
                usage[f["category"]] += f["value"]
        assert usage["call_minutes"] + tenant.call_seconds / 60 == pytest.approx(calls / 60,
                                                                                  abs=0.01)
        assert usage["chat_messages"] > 0


def test_no_broker_is_a_clear_error_naming_the_variable(capsys: pytest.CaptureFixture[str]):
    from pulse.benchmarks.harness import free_port

    settings = Settings.from_env({"PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    code = run_simulate(settings, tenants=1, campaigns=1, customers=1, rate=0, duration=None,
                        events=10, seed=1, start=None, duplicates=0, late=0, invalid=0,
                        broker_timeout=1)
    assert code == 1
    assert "PULSE_KAFKA_BOOTSTRAP" in capsys.readouterr().err


# ---- through the broker and a worker --------------------------------------------------


@pytest.mark.broker
def test_a_backfill_then_live_traffic_become_exact_rollups_lake_rows_and_dead_letters(
        pulse: Pulse):
    now = datetime.now(UTC)
    start = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    start_text = start.isoformat().replace("+00:00", "Z")
    n = 3000
    world = {"tenants": 3, "campaigns": 3, "customers": 40, "seed": 7}
    worker = pulse.start_worker()
    sim = pulse.start("simulate", "--events", str(n), "--backfill-days", "1", "--rate", "3000",
                      "--start", start_text, *(f"--{k}={v}" for k, v in world.items()))

    opts = plan_options(**world, rate=3000, events=n, start=start_text, duplicates=0.02,
                        late=0.02, invalid=0.005, steps=pulse.settings.funnel_steps, now=now,
                        backfill_days=1)
    assert 0 < opts.history_messages < n  # a history, then live traffic at the rate
    messages = take(opts, n)
    now_us = wall_us(datetime.now(UTC))
    decoded = [decode_event(m.value, now_us) for m in messages]
    valid = [e for e in decoded if isinstance(e, Event)]
    invalid = [m.value for m, d in zip(messages, decoded, strict=True) if isinstance(d, Rejected)]
    assert len(invalid) == sum(m.kind == "invalid" for m in messages) > 0
    unique = oracle.unique(valid)
    assert len(unique) < len(valid)

    assert sim.process.wait(120) == 0, sim.log()
    assert f"backfill sent: {opts.history_messages:,} messages over 1 day " in sim.log()
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
    everything_window = (base - 4 * 24 * HOUR, base + 3 * 24 * HOUR)
    for frm, to in [everything_window, (base + 12 * HOUR, base + 30 * HOUR),
                    (base + 23 * HOUR, base + 25 * HOUR), (base - 24 * HOUR, base + HOUR)]:
        h0, h1 = frm // HOUR, to // HOUR
        for tenant, campaign in campaigns:
            got = report.overview(store.total(tenant, campaign, h0, h1), steps)
            want = oracle.campaign_overview(valid, tenant, campaign, frm, to, steps, 30.0)
            assert oracle.approx_equal(got, want), (tenant, campaign, frm, to)
        for tenant in tenants:
            everything = store.total(tenant, ALL, h0, h1)
            if (frm, to) == everything_window:
                assert everything.conversations > 0
                assert report.funnel(everything, steps)[0].customers
            assert oracle.approx_equal(
                {**msgspec.to_builtins(report.overview(everything, steps)),
                 "usage": report.usage(everything)},
                {**oracle.overview(valid, tenant, None, False, frm, to, steps, 30.0),
                 "usage": oracle.usage_report(valid, tenant, frm, to)}), (tenant, frm, to)

    assert pulse.lake_rows(len(valid)) == len(valid)
    assert pulse.lake_events() == event_rows(unique)

    dlq = pulse.dead_letter_topic(expected=len(invalid))
    assert sorted(r.value or b"" for r in dlq) == sorted(invalid)
    assert worker.alive()
