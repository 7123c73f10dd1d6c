"""The rollup tables as a reader holds them: every journal partition folded into sums.

Every API process keeps one `RollupStore`, fed from the newest checkpoints and then by
tailing the journal. A tenant's events are spread over every keyed partition, so its
numbers are the sum of all of them: the store adds each partition's bucket increments
into hour and day sums per (tenant, campaign) and per tenant, maintained on every
increment, so a 30-day report adds about fifty `Measures` rather than thousands. It also
keeps each partition's own buckets, so that a partition reset (a replay, a rebuild)
replaces that partition's part exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import msgspec

from .checkpoint import Body
from .journal import Delta, JournalFold, LakeMark
from .metrics import Measures
from .windows import HOURS_PER_DAY

TOTALS_KEPT = 256
"""Ranges whose totals each (tenant, campaign) remembers between two changes."""

ALL = object()
"""Campaign filter meaning "every event of the tenant, campaign or not"."""

BucketKey = tuple[str, str | None, int]


_ONE = 1 << 64
"""Fixed point of the sums across partitions: units of 2**-64 (about 5e-20)."""


def _fixed(value: float) -> int:
    """`value` in units of 2**-64: exact for every double above about 4e-3, truncated
    below; the scaling by a power of two is itself exact."""
    if abs(value) < 2.0 ** 900:
        return int(value * 18446744073709551616.0)
    return int(value) << 64  # so large that it is an integer


class _Cell:
    """Measures summed over partitions, hours or days, their float fields exactly.

    Float addition depends on order, and every API process folds the journal partitions
    in its own interleaving: summed as floats, two replicas would answer 21237.779789337317
    and 21237.77978933732 for the same range. A cell keeps each float field as an integer
    in fixed point, the sum of each partition bucket's own (deterministic) value, so
    every reader gets the same bits whatever the order, and a partition reset subtracts
    exactly what it once added.
    """

    __slots__ = ("m", "duration", "chat_duration", "usage")

    def __init__(self) -> None:
        self.m = Measures()
        self.duration = 0
        self.chat_duration = 0
        self.usage: dict[str, int] = {}

    def add_change(self, old: Measures | None, new: Measures, m: Measures) -> None:
        """A partition bucket went from `old` (None: absent) to `new` by adding `m`."""
        counts = self.m
        counts.events += m.events
        counts.calls += m.calls
        counts.chats += m.chats
        counts.engaged += m.engaged
        counts.chat_engaged += m.chat_engaged
        for label, n in m.intents.items():
            counts.intents[label] = counts.intents.get(label, 0) + n
        for k, n in m.funnel.items():
            total = counts.funnel.get(k, 0) + n
            if total:
                counts.funnel[k] = total
            else:
                counts.funnel.pop(k, None)
        if m.duration_s:
            self.duration += _fixed(new.duration_s) - (_fixed(old.duration_s) if old else 0)
        if m.chat_duration_s:
            self.chat_duration += (_fixed(new.chat_duration_s)
                                   - (_fixed(old.chat_duration_s) if old else 0))
        for category in m.usage:
            before = _fixed(old.usage.get(category, 0.0)) if old else 0
            self.usage[category] = (self.usage.get(category, 0)
                                    + _fixed(new.usage[category]) - before)
        self._floats()

    def add_cell(self, other: _Cell) -> None:
        self.m.add(other.m)
        self.duration += other.duration
        self.chat_duration += other.chat_duration
        for category, amount in other.usage.items():
            self.usage[category] = self.usage.get(category, 0) + amount

    def _floats(self) -> None:
        """Set the float fields from the exact sums (int / int rounds correctly)."""
        self.m.duration_s = self.duration / _ONE
        self.m.chat_duration_s = self.chat_duration / _ONE
        self.m.usage = {category: amount / _ONE for category, amount in self.usage.items()}

    def measures(self) -> Measures:
        """The sum as `Measures` (a cell kept in a table has `m` up to date already)."""
        self._floats()
        return self.m


@dataclass
class _Sums:
    """Hour and day sums of one (tenant, campaign) or of a whole tenant."""

    hours: dict[int, _Cell] = field(default_factory=dict)
    days: dict[int, _Cell] = field(default_factory=dict)
    totals: dict[tuple[int, int], Measures] = field(default_factory=dict)
    """Answers of `total` since the sums last changed: a dashboard asks the same ranges
    again and again, far more often than the journal changes one tenant's sums."""

    def add(self, hour: int, old: Measures | None, new: Measures, m: Measures) -> None:
        if self.totals:
            self.totals.clear()
        for table, key in ((self.hours, hour), (self.days, hour // HOURS_PER_DAY)):
            cell = table.get(key)
            if cell is None:
                cell = table[key] = _Cell()
            cell.add_change(old, new, m)

    def total(self, from_hour: int, to_hour: int) -> Measures:
        """Sum of [from_hour, to_hour), shared with later callers: read it, never change it."""
        cached = self.totals.get((from_hour, to_hour))
        if cached is None:
            if len(self.totals) >= TOTALS_KEPT:
                self.totals.clear()
            cached = self.totals[from_hour, to_hour] = self._sum(from_hour, to_hour).measures()
        return cached

    def _sum(self, from_hour: int, to_hour: int) -> _Cell:
        """Whole days from the day sums, the edges from the hours."""
        out = _Cell()
        first_full_day = -(-from_hour // HOURS_PER_DAY)
        last_full_day = to_hour // HOURS_PER_DAY
        if first_full_day >= last_full_day:
            _add_range(out, self.hours, from_hour, to_hour)
            return out
        _add_range(out, self.hours, from_hour, first_full_day * HOURS_PER_DAY)
        _add_range(out, self.days, first_full_day, last_full_day)
        _add_range(out, self.hours, last_full_day * HOURS_PER_DAY, to_hour)
        return out

    def expire(self, horizon_hour: int) -> None:
        self.totals.clear()
        for hour in [h for h in self.hours if h < horizon_hour]:
            del self.hours[hour]
        for day in [d for d in self.days if (d + 1) * HOURS_PER_DAY <= horizon_hour]:
            del self.days[day]


def _add_range(out: _Cell, cells: dict[int, _Cell], start: int, end: int) -> None:
    if end - start <= len(cells):
        for key in range(start, end):
            cell = cells.get(key)
            if cell is not None:
                out.add_cell(cell)
    else:
        for key, cell in cells.items():
            if start <= key < end:
                out.add_cell(cell)


@dataclass
class _Tenant:
    everything: _Sums = field(default_factory=_Sums)
    campaigns: dict[str | None, _Sums] = field(default_factory=dict)


@dataclass
class PartitionInfo:
    """What a reader knows about one journal partition besides its buckets."""

    counters: Counter[str] = field(default_factory=Counter)
    watermark_us: int | None = None
    horizon_hour: int | None = None
    progress: dict[int, int] = field(default_factory=dict)
    upstream: dict[int, int] = field(default_factory=dict)
    lake: dict[int, LakeMark] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    records: int = 0
    """Journal records folded (a loaded checkpoint counts as one)."""
    buckets: dict[BucketKey, Measures] = field(default_factory=dict)


class RollupStore:
    """All tenants' rollups, folded from every journal partition."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self.partitions: dict[int, PartitionInfo] = {}
        self._folds: dict[int, JournalFold[Delta]] = {}
        self._horizon: int | None = None
        self.version = 0
        """Moves with every change of the store: any tenant's sums, any partition's
        progress, watermarks or lake marks (so what is derived from those alone may be
        kept until it moves)."""
        self.epoch = 0
        """Moves when every tenant's answers may change at once: a partition loaded or
        forgotten, the retention horizon moved, or a partition folded for the first time
        (the rollups become complete, so answers move from the lake to them)."""
        self._changed: dict[str, int] = {}
        """Per tenant, `version` at the last change of its sums."""

    # ---- folding -------------------------------------------------------------------

    def fold(self, partition: int) -> JournalFold[Delta]:
        """The fold that journal partition `partition`'s records must be fed to."""
        fold = self._folds.get(partition)
        if fold is None:
            fold = self._folds[partition] = JournalFold(_PartitionTarget(self, partition))
            self.partitions[partition] = PartitionInfo()
        return fold

    def load(self, partition: int, body: Body) -> None:
        """Replace `partition`'s part by a checkpoint's (a start, a reset)."""
        fold = self.fold(partition)
        fold.owner, fold.seq = body.session, body.seq
        self.partitions[partition] = PartitionInfo(
            counters=Counter(body.counters), watermark_us=body.watermark_us,
            horizon_hour=body.horizon_hour, progress=dict(body.progress),
            upstream=dict(body.upstream), lake=dict(body.lake), records=1,
            stats={**body.stats, "checkpoint_offset": body.offset,
                   "checkpoint_written_us": body.written_at_us},
            buckets={(t, c, h): m for t, c, h, m in body.buckets})
        self.version += 1
        self._resum()

    def forget(self, partition: int) -> None:
        """Drop `partition`'s part: its state is unknown until a reset brings it back."""
        self.partitions[partition] = PartitionInfo()
        self.version += 1
        self._resum()

    def tenant_version(self, tenant_id: str) -> tuple[int, int]:
        """Changes whenever anything a rollup-backed answer about `tenant_id` reads from
        the sums can, and only then: another tenant's records leave it as it is, so a
        dashboard's conditional poll stays a 304 while other tenants' events flow. Never
        repeats (both parts only grow)."""
        return self.epoch, self._changed.get(tenant_id, 0)

    def ready(self, partitions: int) -> bool:
        """Whether every one of the `partitions` journal partitions has been folded from
        its start or a checkpoint: only then are a tenant's rollups complete."""
        return all(q in self.partitions and self.partitions[q].records
                   for q in range(partitions))

    def lake_marks(self) -> dict[int, LakeMark]:
        """The newest lake mark of each input partition, whichever journal partition
        carries it (a partition's ingest owner may have moved between workers)."""
        marks: dict[int, LakeMark] = {}
        for info in self.partitions.values():
            for p, mark in info.lake.items():
                seen = marks.get(p)
                if seen is None or (mark.flushed_at_us, mark.failures) > (seen.flushed_at_us,
                                                                          seen.failures):
                    marks[p] = mark
        return marks

    def _add(self, info: PartitionInfo, tenant_id: str, campaign: str | None, hour: int,
             m: Measures) -> None:
        bucket = info.buckets.get((tenant_id, campaign, hour))
        if bucket is None:
            old = None
            bucket = info.buckets[(tenant_id, campaign, hour)] = Measures()
        else:
            old = msgspec.structs.replace(bucket, usage=dict(bucket.usage)) if (
                m.duration_s or m.chat_duration_s or m.usage) else bucket
        bucket.add(m)
        self._add_sums(tenant_id, campaign, hour, old, bucket, m)

    def _add_sums(self, tenant_id: str, campaign: str | None, hour: int,
                  old: Measures | None, new: Measures, m: Measures) -> None:
        if self._horizon is not None and hour < self._horizon:
            return
        self._changed[tenant_id] = self.version
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        tenant.everything.add(hour, old, new, m)
        sums = tenant.campaigns.get(campaign)
        if sums is None:
            sums = tenant.campaigns[campaign] = _Sums()
        sums.add(hour, old, new, m)

    def _resum(self) -> None:
        """Rebuild the sums from every partition's buckets (after a partition reset)."""
        self.epoch += 1
        self._tenants = {}
        self._horizon = self._max_horizon()
        for info in self.partitions.values():
            for (tenant, campaign, hour), m in info.buckets.items():
                self._add_sums(tenant, campaign, hour, None, m, m)

    def _max_horizon(self) -> int | None:
        horizons = [i.horizon_hour for i in self.partitions.values() if i.horizon_hour is not None]
        return max(horizons) if horizons else None

    def _advance_horizon(self, partition: PartitionInfo, horizon: int) -> None:
        """A partition's retention moved: drop what it no longer keeps."""
        partition.horizon_hour = horizon
        for key in [k for k in partition.buckets if k[2] < horizon]:
            del partition.buckets[key]
        store_horizon = self._max_horizon()
        if store_horizon is not None and store_horizon != self._horizon:
            self.epoch += 1
            self._horizon = store_horizon
            for tenant in self._tenants.values():
                tenant.everything.expire(store_horizon)
                for sums in tenant.campaigns.values():
                    sums.expire(store_horizon)

    # ---- reading -------------------------------------------------------------------

    def horizon_hour(self) -> int | None:
        """The first hour every partition still keeps (a tenant's hours before it are
        incomplete in some partition, so they are answered from the lake)."""
        return self._horizon

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def total(self, tenant_id: str, campaign: object, from_hour: int, to_hour: int) -> Measures:
        """Shared with later callers: read it, never change it."""
        sums = self._sums(tenant_id, campaign)
        return Measures() if sums is None else sums.total(from_hour, to_hour)

    def hours(self, tenant_id: str, campaign: object, from_hour: int,
              to_hour: int) -> list[tuple[int, Measures]]:
        """The hourly buckets in [from_hour, to_hour), in hour order, not remembered as a
        range total (a heatmap asks for every hour once). Shared: read them, never change
        them."""
        sums = self._sums(tenant_id, campaign)
        if sums is None:
            return []
        if to_hour - from_hour <= len(sums.hours):
            get = sums.hours.get
            return [(h, c.m) for h in range(from_hour, to_hour) if (c := get(h)) is not None]
        return sorted((h, c.m) for h, c in sums.hours.items() if from_hour <= h < to_hour)

    def campaigns(self, tenant_id: str, from_hour: int, to_hour: int) -> dict[str, Measures]:
        """Campaigns (not None) with any event in range, with their (shared) measures."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return {}
        out = {}
        for campaign, sums in tenant.campaigns.items():
            if campaign is None:
                continue
            m = sums.total(from_hour, to_hour)
            if m.events:
                out[campaign] = m
        return out

    def buckets(self) -> list[tuple[str, str | None, int, Measures]]:
        """Every hourly bucket, summed over the partitions (shared: read them only)."""
        return [(tenant_id, campaign, hour, cell.m)
                for tenant_id, tenant in self._tenants.items()
                for campaign, sums in tenant.campaigns.items()
                for hour, cell in sums.hours.items()]

    def _sums(self, tenant_id: str, campaign: object) -> _Sums | None:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        if campaign is ALL:
            return tenant.everything
        return tenant.campaigns.get(cast(str | None, campaign))


class _PartitionTarget:
    """Applies one journal partition's deltas to the shared store."""

    def __init__(self, store: RollupStore, partition: int) -> None:
        self.store = store
        self.partition = partition

    def apply_delta(self, delta: Delta) -> None:
        info = self.store.partitions[self.partition]
        if not info.records:
            self.store.epoch += 1
        info.records += 1
        self.store.version += 1
        for tenant, campaign, hour, m in delta.buckets:
            if info.horizon_hour is None or hour >= info.horizon_hour:
                self.store._add(info, tenant, campaign, hour, m)
        info.counters.update(delta.counters)
        info.watermark_us = delta.watermark_us
        for mine, theirs in ((info.progress, delta.progress), (info.upstream, delta.upstream)):
            for p, t in theirs.items():
                mine[p] = max(t, mine.get(p, t))
        info.lake.update(delta.lake)
        info.stats.update(delta.stats)
        if delta.horizon_hour is not None and delta.horizon_hour != info.horizon_hour:
            self.store._advance_horizon(info, delta.horizon_hour)
