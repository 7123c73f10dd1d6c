"""One query layer, two sources: the rollups in memory and the Parquet lake.

A range `[from, to)` is split into the whole hours the rollups hold (inside retention)
and what is left at its edges, which the lake answers; the pieces are disjoint and
their `Measures` add up, so a mixed answer is as exact as either source. `source` says
which sources answered and `as_of` the time the slowest of them is complete up to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pulse.rollups.metrics import Measures
from pulse.rollups.store import ALL, PartitionInfo, RollupStore
from pulse.rollups.windows import HOUR_US, bucket_starts

from .lake import BY_CAMPAIGN, TOTAL, LakeReader, by_bucket
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
                    measures: bool = True, funnel: bool = True) -> Answer:
        """Measures of the whole range; the lake skips what the caller will not show."""
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

    async def series(self, tenant_id: str, campaign: str | None, r: Range, width_us: int,
                     funnel: bool) -> Answer:
        """{bucket start: Measures} for every bucket from the one holding `from` on."""
        plan = self.plan(tenant_id, r)
        as_of = self.as_of(tenant_id, plan)
        points = {start: Measures() for start in bucket_starts(r.from_us, r.to_us, width_us)}
        if plan.rollups:
            a, b = plan.rollups
            for start, m in points.items():
                lo, hi = max(start, a), min(start + width_us, b)
                if lo < hi:
                    m.add(self.store.total(tenant_id, _filter(campaign), lo // HOUR_US,
                                           hi // HOUR_US))
        if plan.lake:
            group = by_bucket(width_us)
            if funnel:
                found = await self.lake.funnel(tenant_id, campaign, plan.lake, group)
                for start, counts in found.items():
                    points[start].add(Measures(funnel=counts))
            else:
                for start, m in (await self.lake.measures(tenant_id, campaign, plan.lake,
                                                          group)).items():
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
