"""Answers from `pulse compact`'s summaries equal the raw lake's, and the oracle's.

Random streams (exact copies, and copies that disagree: another time, campaign,
event type or value) are written to a lake and summarized; then more events land (new
ones, late ones in summarized days, copies of summarized ids, exact or not), and the
lake is summarized again. At each stage, for random ranges, every lake-backed question
asked with summaries equals the same question asked of the events alone, bit for bit;
without copies that disagree, it equals the oracle too. A summary run killed at any
write leaves the same answers, and the next run finishes it.
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse.api import summaries as plans
from pulse.api.groups import BY_CAMPAIGN, TOTAL, by_bucket, by_cell
from pulse.api.lake import LakeReader
from pulse.lakefs import LakeStore
from pulse.rollups import reach, zones
from pulse.rollups.metrics import Measures
from pulse.schemas.events import Event
from pulse.settings import Settings
from pulse.streams import summaries
from pulse.streams.lake_sink import Flush, LakeWriter
from tests import oracle
from tests.s3 import S3Server
from tests.strategies import BASE_US, HOUR, STEPS, TENANTS, streams

DAY = 24 * HOUR
SETTINGS = Settings(funnel_steps=STEPS)
PARTITIONS = 3
BERLIN = ZoneInfo("Europe/Berlin")


class Lake:
    """A lake written as a worker would: events spread over partitions, a few flushes."""

    def __init__(self, store: LakeStore) -> None:
        self.store = store
        self.writer = LakeWriter(self.store, "e0", "events")
        self.next: dict[int, int] = defaultdict(int)
        self.arrived: list[Event] = []

    def write(self, events: list[Event], flushes: int = 2) -> None:
        self.arrived += events
        for p in range(PARTITIONS):
            mine = events[p::PARTITIONS]
            size = max(1, -(-len(mine) // flushes))
            for start in range(0, len(mine), size):
                flush = Flush(p, self.next[p])
                for event in mine[start:start + size]:
                    flush.add_event(event, self.next[p])
                    flush.last = self.next[p]
                    self.next[p] += 1
                self.writer.write(flush)

    def summarize(self, store: LakeStore | None = None,
                  final: summaries.Final = lambda f, e: True) -> summaries.Totals:
        return summaries.summarize(store or self.store, SETTINGS, final,
                                   lambda rels: [self.store.delete(r) for r in rels])

    def reader(self, use_summaries: bool) -> LakeReader:
        return LakeReader(self.store, SETTINGS.engaged_seconds, STEPS,
                          use_summaries=use_summaries)


async def ask(reader: LakeReader, tenant: str, ranges: list[tuple[int, int]],
              every: bool = True) -> dict:
    """The lake-backed questions of the API, over `ranges` (the first one for those
    grouped by time): every kind of group, filter and funnel option (or, without
    `every`, the overview's)."""
    a, b = ranges[0]
    out: dict[Any, Any] = {}
    for campaign in (None, "spring"):
        out["total", campaign] = await reader.measures(tenant, campaign, ranges, TOTAL)
    out["funnel"] = await reader.funnel(tenant, None, ranges, TOTAL)
    if not every:
        return out
    out["campaigns"] = await reader.measures(tenant, None, ranges, BY_CAMPAIGN)
    berlin_days = by_bucket(zones.buckets(BERLIN, a, b, DAY))
    out["berlin days"] = await reader.measures(tenant, "winter", [(a, b)], berlin_days)
    out["cells"] = await reader.conversations(tenant, None, [(a, b)],
                                              by_cell(zones.segments(BERLIN, a, b)))
    out["entries"] = await reader.funnel(tenant, None, [(a, b)], berlin_days)
    sequence = reach.FunnelOptions("sequence", 3600)
    out["sequence"] = await reader.funnel(tenant, "spring", ranges, TOTAL, sequence)
    out["ttc"] = await reader.time_to_convert(tenant, None, ranges, sequence)
    return out


def same_answers(lake: Lake, ranges: list[list[tuple[int, int]]], every: bool = True) -> dict:
    """Both readers' answers, asserted equal; returns them."""
    with_summaries, raw = lake.reader(True), lake.reader(False)
    try:
        out = {}
        for tenant in TENANTS[:1]:
            for r in ranges:
                got = asyncio.run(ask(with_summaries, tenant, r, every))
                want = asyncio.run(ask(raw, tenant, r, every))
                for question, answer in want.items():
                    assert got[question] == answer, (tenant, r, question)
                out[tenant, tuple(r)] = want
        return out
    finally:
        with_summaries.close()
        raw.close()


def matches_oracle(lake: Lake, answers: dict) -> None:
    """The raw answers (which the summaries' equal) are the oracle's."""
    events = lake.arrived
    for (tenant, ranges), got in answers.items():
        if len(ranges) != 1:
            continue
        frm, to = ranges[0]
        counts = got["funnel"].get(None, {})
        assert [sum(n for k, n in counts.items() if k >= step) for step in range(3)] == [
            row["customers"] for row in oracle.funnel_report(
                events, tenant, None, False, frm, to, STEPS)]
        for campaign in (None, "spring"):
            use = campaign is not None
            m: Measures = got["total", campaign].get(None, Measures())
            block = oracle.conversation_block(events, tenant, campaign, use, frm, to, 30.0)
            assert (m.calls, m.chats, m.engaged) == (
                block["conversations"]["calls"], block["conversations"]["chats"],
                block["engagement"]["engaged"])
            assert math.isclose(m.duration_s, block["engagement"]["total_duration_s"],
                                rel_tol=1e-9, abs_tol=1e-9)
            assert {k: v for k, v in m.intents.items() if v} == oracle.intent_counts(
                events, tenant, campaign, use, frm, to)


@st.composite
def disagreeing(draw: st.DrawFn, originals: list[Event]) -> list[Event]:
    """Copies of some of `originals` that differ from them (a producer error): at another
    time (a minute, an hour or a day off), of another campaign or type, or value."""
    out = []
    for e in draw(st.lists(st.sampled_from(originals), max_size=4)) if originals else []:
        change = draw(st.sampled_from(["minute", "hour", "day", "campaign", "type", "value"]))
        if change in ("minute", "hour", "day"):
            width = {"minute": HOUR // 60, "hour": HOUR, "day": DAY}[change]
            shift = draw(st.sampled_from([-1, 1])) * width
            e = msgspec.structs.replace(e, occurred_us=e.occurred_us + shift)
        elif change == "campaign":
            e = msgspec.structs.replace(e, campaign_id="winter" if e.campaign_id else None)
        elif change == "type":
            e = msgspec.structs.replace(e, event_type="tag_changed")
        else:
            e = msgspec.structs.replace(e, value=(e.value or 0.0) + 31.0)
        out.append(e)
    return out


ranges = st.tuples(st.integers(-100, 80), st.integers(0, HOUR - 1), st.integers(1, 140),
                   st.integers(0, HOUR - 1), st.booleans())


def to_ranges(spec: tuple[int, int, int, int, bool]) -> list[tuple[int, int]]:
    """A range with unaligned edges, or the two ends of one (a mixed answer's lake part)."""
    start, off, length, end_off, split = spec
    frm, to = BASE_US + start * HOUR + off, BASE_US + (start + length) * HOUR + end_off
    if split and length > 50:
        return [(frm, frm + 20 * HOUR), (to - 20 * HOUR, to)]
    return [(frm, max(to, frm + 1))]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_answers_from_summaries_equal_the_raw_lake_after_late_events_and_copies(data):
    stream = data.draw(streams(max_events=50, spread_hours=96))
    conflicts = data.draw(st.booleans())
    first = stream + (data.draw(disagreeing(stream)) if conflicts else [])
    late = data.draw(streams(max_events=15, spread_hours=96))
    late = [msgspec.structs.replace(e, id=f"late-{e.id}") for e in late]
    late += data.draw(st.lists(st.sampled_from(stream), max_size=3))  # exact copies
    if conflicts:
        late += data.draw(disagreeing(stream))
    asked = [to_ranges(data.draw(ranges))]
    asked.append([(BASE_US - 100 * HOUR + 7, BASE_US + 100 * HOUR - 7)])  # all of it
    with tempfile.TemporaryDirectory() as root:
        lake = Lake(LakeStore(root))
        lake.write(random.Random(len(first)).sample(first, len(first)))
        lake.summarize()
        answers = same_answers(lake, asked)
        if not conflicts:
            matches_oracle(lake, answers)
        lake.write(late, flushes=1)  # lands after the summaries: they are stale
        answers = same_answers(lake, asked)
        lake.summarize()  # the changed days again, the others kept
        same_answers(lake, asked)
        if not conflicts:
            matches_oracle(lake, answers)


def event(n: int, day: int, kind: str = "call_ended", **fields: Any) -> Event:
    base = Event("acme", f"ev-{n}", kind, BASE_US + day * DAY + (n % 20) * HOUR + 5,
                 f"cust-{n % 7}", "spring", None, None, None, 40.0, None, 1)
    if kind == "funnel_step":
        base = msgspec.structs.replace(base, label=STEPS[n % 3])
    return msgspec.structs.replace(base, **fields)


def fixed_lake(store: LakeStore) -> Lake:
    lake = Lake(store)
    lake.write([event(n, n % 5, "funnel_step" if n % 3 == 0 else "call_ended")
                for n in range(200)])
    return lake


WEEK = [[(BASE_US - HOUR + 11, BASE_US + 6 * DAY + 13)]]


def test_summaries_answer_until_something_lands_that_they_cannot_know(tmp_path):
    lake = fixed_lake(LakeStore(str(tmp_path)))
    assert lake.summarize().generations == 1
    reader = lake.reader(True)
    try:
        def plan() -> tuple[list[int], bool]:
            listing = reader.listing("acme", fresh=True)
            measures = plans.plan_measures(listing, WEEK[0], reader.loaded, by_day=True)
            summed = measures.summed.column("hour").to_pylist() if measures.summed else []
            days = sorted({hour // DAY - BASE_US // DAY for hour in summed})
            return days, plans.plan_journeys(listing, reader.loaded, None, None) is not None

        assert plan() == ([0, 1, 2, 3, 4], True)
        lake.write([event(1000, 2)])  # a late event in day 2: read raw, the journeys merge it
        assert plan() == ([0, 1, 3, 4], True)
        same_answers(lake, WEEK)
        lake.write([event(3, 4, "funnel_step", occurred_us=BASE_US + 6 * DAY)])
        assert plan() == ([0, 1, 4], False)  # a copy of day 3's step: that day, and the funnel
        same_answers(lake, WEEK)
        assert lake.summarize().generations == 1
        assert plan() == ([0, 1, 2, 4], True)  # days 3 and 6 share an id: never summed rows
        same_answers(lake, WEEK)
        assert lake.summarize().generations == 0  # nothing changed: nothing written
    finally:
        reader.close()


def test_a_run_that_finds_no_final_day_keeps_the_summaries_it_has(tmp_path):
    """Files still being written to every day (a compaction racing the sink) make no
    day final: the run changes nothing and fails nothing, and answers stay equal."""
    lake = fixed_lake(LakeStore(str(tmp_path)))
    assert lake.summarize().generations == 1
    lake.write([event(2000, day, "usage") for day in range(6)])
    totals = lake.summarize(final=lambda f, e: False)
    assert (totals.generations, totals.errors) == (0, 0)
    same_answers(lake, WEEK)
    assert lake.summarize().generations == 1


def test_a_reader_whose_generation_was_replaced_lists_again(tmp_path):
    """A listing is kept until a flush is reported, so a reader may still hold the
    generation a compaction has just replaced and deleted: it lists again."""
    lake = fixed_lake(LakeStore(str(tmp_path)))
    lake.summarize()
    cached = LakeReader(lake.store, SETTINGS.engaged_seconds, STEPS, flushes=lambda: "same")
    try:
        asyncio.run(cached.measures("acme", None, WEEK[0], TOTAL))  # holds generation 1
        lake.write([event(3000, 2, "funnel_step")])
        lake.summarize()  # generation 2; generation 1 deleted
        got = asyncio.run(cached.funnel("acme", None, WEEK[0], TOTAL))  # needs its journeys
        assert cached.listings == 2
        assert got == same_answers(lake, WEEK, every=False)["acme", tuple(WEEK[0])]["funnel"]
    finally:
        cached.close()


class Killed(Exception):
    pass


class DiesAt(LakeStore):
    """A store whose process dies at its `n`th write."""

    def __init__(self, root: str, n: int) -> None:
        super().__init__(root)
        self.n = n

    def put_with(self, rel: str, write: Any) -> int:
        self.n -= 1
        if self.n < 0:
            raise Killed(rel)
        return super().put_with(rel, write)


def test_a_summary_run_killed_at_any_write_leaves_the_same_answers(tmp_path):
    lake = fixed_lake(LakeStore(str(tmp_path)))
    lake.summarize()
    lake.write([event(n, n % 6, "funnel_step" if n % 2 else "usage", category="sms")
                for n in range(500, 560)])
    want = same_answers(lake, WEEK, every=False)
    for n in range(100):
        try:
            lake.summarize(DiesAt(str(tmp_path), n))
        except Killed:
            assert same_answers(lake, WEEK, every=False) == want
            continue
        break
    else:
        pytest.fail("the run never finished")
    assert n > 3 and same_answers(lake, WEEK, every=False) == want
    assert lake.summarize().generations == 0


def test_summaries_on_an_s3_lake(s3: S3Server):
    settings = s3.settings(SETTINGS, s3.new_lake())
    lake = fixed_lake(LakeStore.open(settings.lake, settings))
    assert lake.summarize().generations == 1
    want = same_answers(lake, WEEK, every=False)
    lake.write([event(2000, 1), event(4, 3, "funnel_step")])  # a late event, and a copy
    assert same_answers(lake, WEEK, every=False) != want
    assert lake.summarize().generations == 1
    same_answers(lake, WEEK, every=False)
