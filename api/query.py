"""One query layer, two sources: the rollups in memory and the Parquet lake.

A range `[from, to)` is split into the whole hours the rollups hold (inside retention)
and what is left at its edges, which the lake answers; the pieces are disjoint and
their `Measures` add up, so a mixed answer is as exact as either source. `source` says
which sources answered and `as_of` the time the slowest of them is complete up to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from pulse.rollups import breakdown, reach, zones
from pulse.rollups.metrics import Measures
from pulse.rollups.store import ALL, PartitionInfo, RollupStore
from pulse.rollups.windows import HOUR_US

from .cursor import Page
from .groups import BY_CAMPAIGN, TOTAL, by_bucket, by_cell, by_metadata
from .lake import LakeReader
from .params import Range


@dataclass(frozen=True)
class Plan:
    rollups: tuple[int, int] | None
    """Whole hours [a, b) answered from the rollups (µs), if any."""
    lake: list[tuple[int, int]] = field(default_factory=list)
    """The rest of the range, answered from the lake."""

    @property
    def source(self) -> str:
        if self.rollups and self.lake:
            return "mixed"
        return "rollups" if self.rollups else "lake"


@dataclass
class Answer:
    value: Any
    source: str
    as_of: int | None


class Query:
    def __init__(self, store: RollupStore, lake: LakeReader, partitions: int) -> None:
        self.store = store
        self.lake = lake
        self.partitions = partitions

    def _infos(self) -> list[PartitionInfo] | None:
        """Every journal partition's info, once all are folded (a tenant's events are
        spread over all of them, so its rollups are complete only then)."""
        if not self.store.ready(self.partitions):
            return None
        return [self.store.partitions[q] for q in range(self.partitions)]

    def plan(self, tenant_id: str, r: Range) -> Plan:
        if self._infos() is None:
            return Plan(None, [(r.from_us, r.to_us)])
        a = -(-r.from_us // HOUR_US) * HOUR_US
        b = r.to_us // HOUR_US * HOUR_US
        horizon = self.store.horizon_hour()
        if horizon is not None:
            a = max(a, horizon * HOUR_US)
        if a >= b:
            return Plan(None, [(r.from_us, r.to_us)])
        edges = [(lo, hi) for lo, hi in ((r.from_us, a), (b, r.to_us)) if lo < hi]
        return Plan((a, b), edges)

    def as_of(self, tenant_id: str, plan: Plan) -> int | None:
        """Where the sources of `plan` are complete up to now. Taken before they are read:
        the journal is folded on while the lake answers, and the numbers must not be
        older than their `as_of`."""
        infos = self._infos()
        if infos is None:
            return None
        times = []
        if plan.rollups:
            complete = rollups_as_of(infos, self.partitions)
            if complete is None:
                return None
            times.append(complete)
        if plan.lake:
            marks: dict[int, int] = {}
            for info in infos:  # each partition hears every input partition's marks
                for p, mark in info.lake.items():
                    marks[p] = max(marks.get(p, mark.as_of_us), mark.as_of_us)
            if marks:
                times.append(min(marks.values()))
        return min(times) if times else None

    # ---- questions -----------------------------------------------------------------

    async def total(self, tenant_id: str, campaign: str | None, r: Range,
                    measures: bool = True, funnel: bool = True,
                    options: reach.FunnelOptions = reach.DEFAULT) -> Answer:
        """Measures of the whole range; the lake skips what the caller will not show.

        A funnel under other options than the rollups hold comes from the lake, for the
        whole range (its journeys' step times are only there).
        """
        if funnel and not options.is_default:
            parts = [await self.journey_funnel(tenant_id, campaign, r, options)]
            if measures:
                measured = await self.total(tenant_id, campaign, r, funnel=False)
                measured.value.funnel = {}  # the rollups' default funnel: replaced by parts[0]
                parts.append(measured)
            return combine(parts, sum_measures)
        plan = self.plan(tenant_id, r)
        as_of = self.as_of(tenant_id, plan)
        out = Measures()
        if plan.rollups:
            a, b = plan.rollups
            out.add(self.store.total(tenant_id, _filter(campaign), a // HOUR_US, b // HOUR_US))
        if plan.lake:
            if measures:
                found = await self.lake.measures(tenant_id, campaign, plan.lake, TOTAL)
                for m in found.values():
                    out.add(m)
            if funnel:
                lake_funnel = await self.lake.funnel(tenant_id, campaign, plan.lake, TOTAL)
                out.add(Measures(funnel=lake_funnel.get(None, {})))
        return Answer(out, plan.source, as_of)

    async def series(self, tenant_id: str, campaign: str | None, r: Range,
                     buckets: zones.Buckets, part: str) -> Answer:
        """{bucket start: Measures} for every bucket from the one holding `from` on; the
        lake computes only `part` of them: `funnel`, `conversations` or `measures` (all).

        The rollups answer the whole hours inside retention when every bucket edge is a
        UTC hour boundary; in zones off UTC by half hours the lake answers it all.
        """
        plan = self.plan(tenant_id, r)
        if not buckets.hour_aligned:
            plan = Plan(None, [(r.from_us, r.to_us)])
        as_of = self.as_of(tenant_id, plan)
        points = {start: Measures() for start in buckets.starts}
        if plan.rollups:
            a, b = plan.rollups
            ends = [*buckets.starts[1:], r.to_us]
            for (start, m), end in zip(points.items(), ends, strict=True):
                lo, hi = max(start, a), min(end, b)
                if lo < hi:
                    m.add(self.store.total(tenant_id, _filter(campaign), lo // HOUR_US,
                                           hi // HOUR_US))
        if plan.lake:
            group = by_bucket(buckets)
            if part == "funnel":
                found = await self.lake.funnel(tenant_id, campaign, plan.lake, group)
                for start, counts in found.items():
                    points[start].add(Measures(funnel=counts))
            else:
                ask = self.lake.conversations if part == "conversations" else self.lake.measures
                for start, m in (await ask(tenant_id, campaign, plan.lake, group)).items():
                    points[start].add(m)
        return Answer(points, plan.source, as_of)

    async def campaigns(self, tenant_id: str, r: Range) -> Answer:
        """{campaign: Measures} of the campaigns with any event in range."""
        plan = self.plan(tenant_id, r)
        as_of = self.as_of(tenant_id, plan)
        out: dict[str, Measures] = {}
        if plan.rollups:
            a, b = plan.rollups
            for campaign, m in self.store.campaigns(tenant_id, a // HOUR_US,
                                                    b // HOUR_US).items():
                out.setdefault(campaign, Measures()).add(m)
        if plan.lake:
            for campaign, m in (await self.lake.measures(tenant_id, None, plan.lake,
                                                         BY_CAMPAIGN)).items():
                if campaign is not None and m.events:
                    out.setdefault(campaign, Measures()).add(m)
        return Answer(out, plan.source, as_of)

    async def heatmap(self, tenant_id: str, campaign: str | None, r: Range,
                      zone: ZoneInfo) -> Answer:
        """(conversations, engaged) lists of the 168 weekday * 24 + hour cells of local
        time in `zone`.

        The rollups answer the whole hours when each UTC hour lies in one local hour
        (every offset whole hours, changing on the hour); otherwise the lake does.
        """
        segs = zones.segments(zone, r.from_us, r.to_us)
        plan = self.plan(tenant_id, r)
        if not zones.hour_aligned(segs):
            plan = Plan(None, [(r.from_us, r.to_us)])
        as_of = self.as_of(tenant_id, plan)
        conversations, engaged = [0] * 168, [0] * 168
        if plan.rollups:
            a, b = plan.rollups
            hours = [(h, m) for h, m in self.store.hours(tenant_id, _filter(campaign),
                                                         a // HOUR_US, b // HOUR_US)
                     if m.calls or m.chats]
            for cell, (_, m) in zip(zones.hour_cells([h for h, _ in hours], segs), hours,
                                    strict=True):
                conversations[cell] += m.calls + m.chats
                engaged[cell] += m.engaged
        if plan.lake:
            found = await self.lake.conversations(tenant_id, campaign, plan.lake,
                                                  by_cell(segs), ("calls", "chats", "engaged"))
            for cell, m in found.items():
                conversations[cell] += m.conversations
                engaged[cell] += m.engaged
        return Answer((conversations, engaged), plan.source, as_of)

    async def breakdown(self, tenant_id: str, campaign: str | None, r: Range,
                        by: str) -> Answer:
        """{group value: Tally} of the conversations in range, for `by` = channel, campaign
        or metadata.<key> (checked by `breakdown.metadata_key`)."""
        key = breakdown.metadata_key(by)
        if key is not None:  # metadata: only the lake holds it
            plan, as_of = self._lake_only(tenant_id, r)
            found = await self.lake.conversations(tenant_id, campaign, plan.lake,
                                                  by_metadata(key))
            return Answer(breakdown.merge((breakdown.json_value_text(token), _tally(m))
                                          for token, m in found.items()), plan.source, as_of)
        if by == "channel":
            answer = await self.total(tenant_id, campaign, r, funnel=False)
            m = answer.value
            chat = breakdown.Tally(m.chats, m.chat_engaged, m.chat_duration_s)
            call = breakdown.Tally(m.calls, m.engaged - m.chat_engaged,
                                   m.duration_s - m.chat_duration_s)
            return Answer(breakdown.merge([("call", call), ("chat", chat)]), answer.source,
                          answer.as_of)
        return await self._by_campaign(tenant_id, campaign, r)

    async def _by_campaign(self, tenant_id: str, campaign: str | None, r: Range) -> Answer:
        plan = self.plan(tenant_id, r)
        as_of = self.as_of(tenant_id, plan)
        found: list[tuple[str | None, breakdown.Tally]] = []
        if plan.rollups:
            a, b = (t // HOUR_US for t in plan.rollups)
            if campaign is None:
                found += [(c, _tally(m)) for c, m in self.store.campaigns(tenant_id, a,
                                                                          b).items()]
                found.append((None, _tally(self.store.total(tenant_id, None, a, b))))
            else:
                found.append((campaign, _tally(self.store.total(tenant_id, campaign, a, b))))
        if plan.lake:
            lake = await self.lake.conversations(tenant_id, campaign, plan.lake, BY_CAMPAIGN)
            found += [(c, _tally(m)) for c, m in lake.items()]
        return Answer(breakdown.merge(found), plan.source, as_of)

    # ---- journeys at full resolution (the lake) ------------------------------------

    def _lake_only(self, tenant_id: str, r: Range) -> tuple[Plan, int | None]:
        """The whole range from the lake, and its as_of (taken before it is read)."""
        plan = Plan(None, [(r.from_us, r.to_us)])
        return plan, self.as_of(tenant_id, plan)

    async def journey_funnel(self, tenant_id: str, campaign: str | None, r: Range,
                             options: reach.FunnelOptions) -> Answer:
        """Measures holding only the funnel of the journeys with t1 in range, under `options`."""
        plan, as_of = self._lake_only(tenant_id, r)
        counts = await self.lake.funnel(tenant_id, campaign, plan.lake, TOTAL, options)
        return Answer(Measures(funnel=counts.get(None, {})), plan.source, as_of)

    async def time_to_convert(self, tenant_id: str, campaign: str | None, r: Range,
                              options: reach.FunnelOptions) -> Answer:
        """[Durations of steps 2..n] of the journeys with t1 in range."""
        plan, as_of = self._lake_only(tenant_id, r)
        found = await self.lake.time_to_convert(tenant_id, campaign, plan.lake, options)
        return Answer(found, plan.source, as_of)

    async def customers(self, tenant_id: str, campaign: str | None, r: Range,
                        options: reach.FunnelOptions, outcome: str, step: int,
                        page: Page | None, limit: int | None) -> Answer:
        """(rows, snapshot) of `LakeReader.customers`; every page keeps the first one's
        snapshot and as_of."""
        plan, as_of = self._lake_only(tenant_id, r)
        found = await self.lake.customers(tenant_id, campaign, plan.lake, options, outcome,
                                          step, page, limit)
        return Answer(found, plan.source, as_of if page is None else page.as_of_us)


def partition_as_of(info: PartitionInfo, partitions: int) -> int | None:
    """Time up to which every input partition is in one keyed partition: in its measures,
    and (through every partition's steps) in its journeys."""
    if not info.progress or len(info.upstream) < partitions:
        return None
    return min(min(info.progress.values()), min(info.upstream.values()))


def rollups_as_of(infos: list[PartitionInfo], partitions: int) -> int | None:
    """Time up to which every input partition is in the rollups of every partition."""
    times = [partition_as_of(info, partitions) for info in infos]
    return None if not times or None in times else min(t for t in times if t is not None)


def _filter(campaign: str | None) -> object:
    return ALL if campaign is None else campaign


def _tally(m: Measures) -> breakdown.Tally:
    return breakdown.Tally(m.conversations, m.engaged, m.duration_s)


def combine(parts: list[Answer], value: Callable[[list[Any]], Any]) -> Answer:
    """One answer from parts read from several sources: `value` of their values, `source`
    covering all of them, and the earliest `as_of` (None if any part's is unknown)."""
    sources = {p.source for p in parts}
    source = sources.pop() if len(sources) == 1 else "mixed"
    times = [p.as_of for p in parts]
    as_of = None if None in times else min(t for t in times if t is not None)
    return Answer(value([p.value for p in parts]), source, as_of)


def sum_measures(values: list[Measures]) -> Measures:
    out = Measures()
    for m in values:
        out.add(m)
    return out
