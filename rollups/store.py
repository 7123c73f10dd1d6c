"""The rollup tables as a reader holds them: journal deltas folded into hour and day sums.

Every API process keeps one `RollupStore`, fed by tailing the journal. Besides the
hourly buckets per campaign it keeps day sums and tenant-wide sums, maintained on
every increment, so a 30-day report adds about fifty `Measures` rather than thousands.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .journal import Delta, JournalFold, LakeMark, Snapshot
from .metrics import Measures
from .windows import HOURS_PER_DAY

TOTALS_KEPT = 256
"""Ranges whose totals each (tenant, campaign) remembers between two changes."""

ALL = object()
"""Campaign filter meaning "every event of the tenant, campaign or not"."""


@dataclass
class _Sums:
    """Hour and day sums of one (tenant, campaign) or of a whole tenant."""

    hours: dict[int, Measures] = field(default_factory=dict)
    days: dict[int, Measures] = field(default_factory=dict)
    totals: dict[tuple[int, int], Measures] = field(default_factory=dict)
    """Answers of `total` since the sums last changed: a dashboard asks the same ranges
    again and again, far more often than the journal changes one tenant's sums."""

    def add(self, hour: int, m: Measures) -> None:
        if self.totals:
            self.totals.clear()
        for table, key in ((self.hours, hour), (self.days, hour // HOURS_PER_DAY)):
            bucket = table.get(key)
            if bucket is None:
                bucket = table[key] = Measures()
            bucket.add(m)

    def total(self, from_hour: int, to_hour: int) -> Measures:
        """Sum of [from_hour, to_hour), shared with later callers: read it, never change it."""
        cached = self.totals.get((from_hour, to_hour))
        if cached is None:
            if len(self.totals) >= TOTALS_KEPT:
                self.totals.clear()
            cached = self.totals[from_hour, to_hour] = self._sum(from_hour, to_hour)
        return cached

    def _sum(self, from_hour: int, to_hour: int) -> Measures:
        """Whole days from the day sums, the edges from the hours."""
        out = Measures()
        first_full_day = -(-from_hour // HOURS_PER_DAY)
        last_full_day = to_hour // HOURS_PER_DAY
        if first_full_day >= last_full_day:
            self._add_hours(out, from_hour, to_hour)
            return out
        self._add_hours(out, from_hour, first_full_day * HOURS_PER_DAY)
        if last_full_day - first_full_day <= len(self.days):
            for day in range(first_full_day, last_full_day):
                m = self.days.get(day)
                if m is not None:
                    out.add(m)
        else:
            for day, m in self.days.items():
                if first_full_day <= day < last_full_day:
                    out.add(m)
        self._add_hours(out, last_full_day * HOURS_PER_DAY, to_hour)
        return out

    def _add_hours(self, out: Measures, start: int, end: int) -> None:
        if end - start <= len(self.hours):
            for hour in range(start, end):
                m = self.hours.get(hour)
                if m is not None:
                    out.add(m)
        else:
            for hour, m in self.hours.items():
                if start <= hour < end:
                    out.add(m)

    def expire(self, horizon_hour: int) -> None:
        self.totals.clear()
        for hour in [h for h in self.hours if h < horizon_hour]:
            del self.hours[hour]
        for day in [d for d in self.days if (d + 1) * HOURS_PER_DAY <= horizon_hour]:
            del self.days[day]


@dataclass
class _Tenant:
    partition: int
    everything: _Sums = field(default_factory=_Sums)
    campaigns: dict[str | None, _Sums] = field(default_factory=dict)


@dataclass
class PartitionInfo:
    """What a reader knows about one journal partition besides its buckets."""

    counters: Counter[str] = field(default_factory=Counter)
    watermark_us: int | None = None
    horizon_hour: int | None = None
    progress: dict[int, int] = field(default_factory=dict)
    lake: dict[int, LakeMark] = field(default_factory=dict)
    records: int = 0


class RollupStore:
    """All tenants' rollups, folded from every journal partition."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self.partitions: dict[int, PartitionInfo] = {}
        self._folds: dict[int, JournalFold] = {}

    # ---- folding -------------------------------------------------------------------

    def fold(self, partition: int) -> JournalFold:
        """The fold that journal partition `partition`'s records must be fed to."""
        fold = self._folds.get(partition)
        if fold is None:
            fold = self._folds[partition] = JournalFold(_PartitionTarget(self, partition))
            self.partitions[partition] = PartitionInfo()
        return fold

    def _add(self, partition: int, tenant_id: str, campaign: str | None, hour: int,
             m: Measures) -> None:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant(partition)
        tenant.everything.add(hour, m)
        sums = tenant.campaigns.get(campaign)
        if sums is None:
            sums = tenant.campaigns[campaign] = _Sums()
        sums.add(hour, m)

    def _expire(self, partition: int, horizon_hour: int) -> None:
        for tenant in self._tenants.values():
            if tenant.partition == partition:
                tenant.everything.expire(horizon_hour)
                for sums in tenant.campaigns.values():
                    sums.expire(horizon_hour)

    def _drop_partition(self, partition: int) -> None:
        self._tenants = {t: v for t, v in self._tenants.items() if v.partition != partition}

    # ---- reading -------------------------------------------------------------------

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def info(self, tenant_id: str) -> PartitionInfo | None:
        tenant = self._tenants.get(tenant_id)
        return None if tenant is None else self.partitions.get(tenant.partition)

    def total(self, tenant_id: str, campaign: object, from_hour: int, to_hour: int) -> Measures:
        """Shared with later callers: read it, never change it."""
        sums = self._sums(tenant_id, campaign)
        return Measures() if sums is None else sums.total(from_hour, to_hour)

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
        """Every hourly bucket, as a snapshot carries them."""
        return [
            (tenant_id, campaign, hour, m)
            for tenant_id, tenant in self._tenants.items()
            for campaign, sums in tenant.campaigns.items()
            for hour, m in sums.hours.items()
        ]

    def _sums(self, tenant_id: str, campaign: object) -> _Sums | None:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        if campaign is ALL:
            return tenant.everything
        return tenant.campaigns.get(campaign)  # type: ignore[arg-type]


class _PartitionTarget:
    """Applies one journal partition's deltas and snapshots to the shared store."""

    def __init__(self, store: RollupStore, partition: int) -> None:
        self.store = store
        self.partition = partition

    def apply_delta(self, delta: Delta) -> None:
        info = self.store.partitions[self.partition]
        info.records += 1
        for tenant, campaign, hour, m in delta.buckets:
            if info.horizon_hour is None or hour >= info.horizon_hour:
                self.store._add(self.partition, tenant, campaign, hour, m)
        info.counters.update(delta.counters)
        info.watermark_us = delta.watermark_us
        for p, t in delta.progress.items():
            info.progress[p] = max(t, info.progress.get(p, t))
        info.lake.update(delta.lake)
        if delta.horizon_hour is not None and delta.horizon_hour != info.horizon_hour:
            info.horizon_hour = delta.horizon_hour
            self.store._expire(self.partition, delta.horizon_hour)

    def load_snapshot(self, snapshot: Snapshot) -> None:
        self.store._drop_partition(self.partition)
        info = self.store.partitions[self.partition] = PartitionInfo(
            counters=Counter(snapshot.counters),
            watermark_us=snapshot.watermark_us,
            horizon_hour=snapshot.horizon_hour,
            progress=dict(snapshot.progress),
            lake=dict(snapshot.lake),
        )
        info.records += 1
        for tenant, campaign, hour, m in snapshot.buckets:
            self.store._add(self.partition, tenant, campaign, hour, m)
