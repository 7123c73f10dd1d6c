"""One keyed partition of the worker: dedup, journeys and bucket increments per batch.

`PartitionState.process` turns a `SourceBatch` into the `Delta` the agent writes to
the journal and updates the state the same way `apply_delta` does when the journal is
folded back after a restart; a property test holds the two equal. Nothing here reads a
clock: retention follows the event-time watermark, so a replay decides exactly what
the first run decided.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
import numpy as np

from pulse.schemas.events import Event

from . import funnel
from .dedup import SeenSet, content_digest, entries_from_bytes, id_digest, pack_entries
from .journal import Delta, LakeMark, Snapshot
from .metrics import Measures, fold_event
from .windows import DAY_US, HOUR_US, HOURS_PER_DAY


class SourceBatch(msgspec.Struct, array_like=True, gc=False):
    """What the ingest stage forwards to one keyed partition.

    `entries` are (source partition, source offset, event or dead-letter reason), in
    source-offset order per source partition; `progress` and `lake` say how far each
    source partition has been read and written to the lake.
    """

    entries: list[tuple[int, int, Event | str]]
    progress: dict[int, int]
    lake: dict[int, LakeMark]


@dataclass(frozen=True)
class RollupSpec:
    """The definitions the rollups depend on; changing them needs `pulse replay`."""

    funnel: funnel.FunnelSpec
    engaged_seconds: float
    retention_hours: int


_event_encoder = msgspec.msgpack.Encoder()


class PartitionState:
    """Everything one keyed partition knows; rebuilt by folding its journal."""

    def __init__(self, spec: RollupSpec) -> None:
        self.spec = spec
        self.applied: dict[int, int] = {}
        self.seen = SeenSet()
        self.journeys: dict[tuple[str, str | None], dict[str, int]] = {}
        self.counters: Counter[str] = Counter()
        self.watermark_us: int | None = None
        self.horizon_hour: int | None = None
        self.progress: dict[int, int] = {}
        self.lake: dict[int, LakeMark] = {}
        self._session: str | None = None
        self._seq = 0

    # ---- live processing -----------------------------------------------------------

    def process(self, batch: SourceBatch, session: str) -> Delta | None:
        """Apply one forwarded batch; the returned delta re-creates the same change."""
        horizon = self.horizon_hour
        applied: dict[int, int] = {}
        counters: Counter[str] = Counter()
        buckets: dict[tuple[str, str | None, int], Measures] = {}
        journeys: dict[tuple[str, str | None, str], int] = {}
        fresh: list[Event] = []
        watermark = self.watermark_us

        for source, offset, item in batch.entries:
            if offset <= self.applied.get(source, -1):
                continue  # a replay of something already in the journal
            self.applied[source] = applied[source] = offset
            counters["read"] += 1
            if isinstance(item, str):
                counters["dead_letters"] += 1
                counters[f"dead_letter:{item}"] += 1
                continue
            if watermark is None or item.occurred_us > watermark:
                watermark = item.occurred_us
            if horizon is not None and item.occurred_us // HOUR_US < horizon:
                # Outside retention: the lake answers for it. Journeys still learn the
                # step, because a journey's t1 and reached step span all of time.
                counters["accepted"] += 1
                counters["beyond_retention"] += 1
                self._step(item, horizon, buckets, journeys)
                continue
            fresh.append(item)

        new_seen = self._count_unique(fresh, horizon, counters, buckets, journeys) if fresh else b""

        progress = _advance(self.progress, batch.progress)
        lake = {}
        for p, mark in batch.lake.items():
            old = self.lake.get(p)
            if old is not None and mark.as_of_us < old.as_of_us:  # never move back in time
                mark = LakeMark(old.as_of_us, old.flushed_at_us, mark.failures, mark.error)
            if mark != old:
                lake[p] = mark
        self.lake.update(lake)
        if not (applied or progress or lake):
            return None
        self.counters.update(counters)
        self.watermark_us = watermark
        self._advance_horizon()
        if session != self._session:
            self._session, self._seq = session, 0
        self._seq += 1
        return Delta(
            session=session,
            seq=self._seq,
            applied=applied,
            counters=dict(counters),
            buckets=[(t, c, h, m) for (t, c, h), m in buckets.items() if not m.is_empty()],
            seen=new_seen,
            journeys=[(t, c, u, packed) for (t, c, u), packed in journeys.items()],
            watermark_us=self.watermark_us,
            horizon_hour=self.horizon_hour,
            progress=progress,
            lake=lake,
        )

    def _count_unique(
        self,
        events: list[Event],
        horizon: int | None,
        counters: Counter[str],
        buckets: dict[tuple[str, str | None, int], Measures],
        journeys: dict[tuple[str, str | None, str], int],
    ) -> bytes:
        """Count the events not seen before; returns the new dedup entries as bytes."""
        digests = [id_digest(e.tenant_id, e.id) for e in events]
        halves = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        found, stored = self.seen.lookup_runs(halves[:, 0], halves[:, 1])
        seen, encode, engaged = self.seen, _event_encoder.encode, self.spec.engaged_seconds
        new_digests: list[bytes] = []
        new_contents: list[int] = []
        new_days: list[int] = []
        duplicates = conflicting = 0
        for event, digest, hit, before in zip(events, digests, found, stored, strict=True):
            content = content_digest(encode(event))
            previous = before if hit else seen.recent(digest)
            if previous is not None:
                duplicates += 1
                conflicting += previous != content
                continue
            day = event.occurred_us // DAY_US
            seen.add_recent(digest, content, day)
            new_digests.append(digest)
            new_contents.append(content)
            new_days.append(day)
            key = (event.tenant_id, event.campaign_id, event.occurred_us // HOUR_US)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Measures()
            fold_event(bucket, event, engaged)
            if event.event_type == "funnel_step":
                self._step(event, horizon, buckets, journeys)
        for name, n in (("accepted", len(new_days)), ("duplicates", duplicates),
                        ("conflicting_duplicates", conflicting)):
            if n:
                counters[name] += n
        seen.settle()
        return pack_entries(new_digests, new_contents, new_days).tobytes() if new_days else b""

    def _step(
        self,
        event: Event,
        horizon: int | None,
        buckets: dict[tuple[str, str | None, int], Measures],
        journeys: dict[tuple[str, str | None, str], int],
    ) -> None:
        """Move the event's journey and its funnel bucket(s); non-steps change nothing."""
        if event.event_type != "funnel_step":
            return
        step = self.spec.funnel.index(event.label)
        if step is None or event.customer_id is None:
            return
        group = self.journeys.setdefault((event.tenant_id, event.campaign_id), {})
        old = group.get(event.customer_id)
        new = funnel.apply_step(old, step, event.occurred_us // HOUR_US)
        if new == old:
            return
        group[event.customer_id] = new
        journeys[(event.tenant_id, event.campaign_id, event.customer_id)] = new
        for pos, sign in ((funnel.position(old), -1), (funnel.position(new), 1)):
            if pos is None or (horizon is not None and pos[0] < horizon):
                continue
            key = (event.tenant_id, event.campaign_id, pos[0])
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Measures()
            total = bucket.funnel.get(pos[1], 0) + sign
            if total:
                bucket.funnel[pos[1]] = total
            else:
                del bucket.funnel[pos[1]]

    def _advance_horizon(self) -> None:
        if self.watermark_us is None:
            return
        horizon = self.watermark_us // HOUR_US - self.spec.retention_hours
        if self.horizon_hour is None or horizon > self.horizon_hour:
            old_day = None if self.horizon_hour is None else self.horizon_hour // HOURS_PER_DAY
            self.horizon_hour = horizon
            if old_day is None or horizon // HOURS_PER_DAY > old_day:
                self.seen.expire(horizon // HOURS_PER_DAY)

    # ---- journal fold --------------------------------------------------------------

    def apply_delta(self, delta: Delta) -> None:
        for source, offset in delta.applied.items():
            if offset > self.applied.get(source, -1):
                self.applied[source] = offset
        self.counters.update(delta.counters)
        if delta.seen:
            self.seen.add(entries_from_bytes(delta.seen))
        for tenant, campaign, customer, packed in delta.journeys:
            self.journeys.setdefault((tenant, campaign), {})[customer] = packed
        self.watermark_us = delta.watermark_us
        _advance(self.progress, delta.progress)
        self.lake.update(delta.lake)
        self._advance_horizon()

    def load_snapshot(self, snapshot: Snapshot) -> None:
        self.applied = dict(snapshot.applied)
        self.counters = Counter(snapshot.counters)
        self.seen = SeenSet.from_bytes(snapshot.seen)
        self.journeys = {}
        for tenant, campaign, customer, packed in snapshot.journeys:
            self.journeys.setdefault((tenant, campaign), {})[customer] = packed
        self.watermark_us = snapshot.watermark_us
        self.horizon_hour = snapshot.horizon_hour
        self.progress = dict(snapshot.progress)
        self.lake = dict(snapshot.lake)

    def snapshot(self, buckets: list[tuple[str, str | None, int, Measures]]) -> Snapshot:
        return Snapshot(
            applied=dict(self.applied),
            counters=dict(self.counters),
            buckets=buckets,
            seen=self.seen.to_bytes(),
            journeys=[
                (tenant, campaign, customer, packed)
                for (tenant, campaign), group in self.journeys.items()
                for customer, packed in group.items()
            ],
            watermark_us=self.watermark_us,
            horizon_hour=self.horizon_hour,
            progress=dict(self.progress),
            lake=dict(self.lake),
        )


def _advance(current: dict[int, int], incoming: dict[int, int]) -> dict[int, int]:
    """Raise `current` to `incoming` where it is ahead; returns what moved."""
    moved = {p: t for p, t in incoming.items() if t > current.get(p, -(1 << 62))}
    current.update(moved)
    return moved
