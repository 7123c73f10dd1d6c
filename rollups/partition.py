"""One keyed partition of the worker: dedup, measures and journeys, one message at a time.

Work is keyed finer than the tenant, so one tenant's load spreads over every partition
(two-level, as Flink aggregates): the ingest stage sends each event to the partition of
its (tenant, id) digest, which deduplicates it and folds it into hourly measures; the
`funnel_step` events it counts go on, as a `StepBatch`, to the partition of their
journey (tenant, campaign, customer), which keeps the journey and the funnel. Every
partition does both, for different keys.

`PartitionState.process` turns one keyed message into the `Delta` the agent writes to
the journal (and the steps to forward first), and changes the state the same way
`apply_delta` does when the journal is folded back after a restart; a property test
holds the two equal. Nothing here reads a clock: retention follows the event-time
watermark, so a replay decides exactly what the first run decided.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from pulse.schemas.events import Event

from . import funnel
from .checkpoint import FORMAT, Body, Definitions, RunRef
from .columns import BatchColumns, ColumnBatch, from_events
from .dedup import SeenSet, entries_from_journal, journal_entries, unique_digests
from .journal import Delta, LakeMark
from .metrics import EVENT_TYPES, Measures, fold_columns
from .windows import DAY_US, HOUR_US, HOURS_PER_DAY


class EventBatch(msgspec.Struct, tag="events", array_like=True, gc=False):
    """What the ingest stage forwarded before batches became columns (`ColumnBatch`):
    still read, so that messages an older worker left in the keyed topic count after an
    upgrade. Per event, its source partition (int32), offset (int64), id digest (16
    bytes) and content digest (uint32), packed as bytes."""

    sources: bytes
    offsets: bytes
    digests: bytes
    contents: bytes
    events: list[Event]
    dead: list[tuple[int, int, str]]
    progress: dict[int, int]
    lake: dict[int, LakeMark]

    def columns(self) -> ColumnBatch:
        return from_events(np.frombuffer(self.sources, np.int32).tolist(),
                           np.frombuffer(self.offsets, np.int64).tolist(), self.digests,
                           np.frombuffer(self.contents, np.uint32).tolist(), self.events,
                           self.dead, self.progress, self.lake)


class StepBatch(msgspec.Struct, tag="steps", array_like=True, gc=False):
    """Counted funnel steps one keyed partition sends to the partition of their journey.

    `as_of_us` is how far the sender is complete (its `as_of`), so the journeys' own
    `as_of` can say how complete the funnel is; an empty batch is a heartbeat.
    """

    origin: int
    as_of_us: int | None
    steps: list[tuple[str, str | None, str, int, int]]
    """(tenant, campaign, customer, step index, occurred µs)."""


class JourneySteps(msgspec.Struct, tag="journey-steps", array_like=True, gc=False):
    """The funnel steps any number of keyed partitions counted for the journeys of one:
    what the rollup agent sends each partition once per group of messages it processed
    (`merge_steps`), rather than a `StepBatch` per message and destination; `as_of` is
    each sender's (see `StepBatch`)."""

    as_of: dict[int, int]
    steps: list[tuple[str, str | None, str, int, int]]


KeyedMessage = ColumnBatch | EventBatch | StepBatch | JourneySteps


@dataclass(frozen=True)
class RollupSpec:
    """The definitions the rollups depend on; changing them needs `pulse replay`."""

    funnel: funnel.FunnelSpec
    engaged_seconds: float
    retention_hours: int
    partitions: int

    def definitions(self) -> Definitions:
        return Definitions(self.funnel.steps, self.engaged_seconds, self.retention_hours,
                           self.partitions)


def journey_partition(tenant_id: str, campaign: str | None, customer: str,
                      partitions: int) -> int:
    """The keyed partition that keeps a journey (crc32, not the process-salted hash)."""
    key = f"{tenant_id}\x00{campaign}\x00{customer}"  # routing: need not be one-to-one
    return zlib.crc32(key.encode(errors="surrogatepass")) % partitions


class KeyedGap(Exception):
    """A keyed message lies beyond the next one expected: messages in between are gone
    (the keyed topic's retention dropped them), so this state cannot be carried on."""


@dataclass
class Outcome:
    """What processing one keyed message produced: steps to forward, then the delta."""

    delta: Delta | None
    forwards: dict[int, StepBatch] = field(default_factory=dict)


Steps = list[tuple[str, str | None, str, int, int]]
_FUNNEL_STEP = EVENT_TYPES.index("funnel_step")


class PartitionState:
    """Everything one keyed partition knows; rebuilt from a checkpoint and the journal."""

    def __init__(self, spec: RollupSpec, partition: int, seen: SeenSet) -> None:
        self.spec = spec
        self.partition = partition
        self.seen = seen
        self.applied: dict[int, int] = {}
        self.counters: Counter[str] = Counter()
        self.watermark_us: int | None = None
        self.horizon_hour: int | None = None
        self.progress: dict[int, int] = {}
        self.upstream: dict[int, int] = {}
        self.lake: dict[int, LakeMark] = {}
        self.keyed_next = -1
        self.buckets: dict[tuple[str, str | None, int], Measures] = {}
        self.journeys: dict[tuple[str, str | None], dict[str, bytes]] = {}
        self.stats: dict[str, float] = {}
        """Facts about the worker (recovery, dedup memory) for the next delta to carry."""
        self.reported: dict[str, float] = {}
        """Every fact sent so far, newest value each: a checkpoint carries them."""
        self._session: str | None = None
        self._seq = 0

    # ---- live processing -----------------------------------------------------------

    def process(self, message: KeyedMessage, keyed_offset: int, session: str) -> Outcome:
        """Apply one keyed message; the returned delta re-creates the same change."""
        if 0 <= self.keyed_next < keyed_offset:
            raise KeyedGap(f"keyed partition {self.partition}: offset {keyed_offset} "
                           f"arrived, {self.keyed_next} was expected next")
        if keyed_offset < self.keyed_next:
            return Outcome(None)  # processed before: its delta is in the journal
        change = _Change(self)
        forwards: dict[int, StepBatch] = {}
        if isinstance(message, JourneySteps):
            self._steps(message.steps, message.as_of, change)
        elif isinstance(message, StepBatch):
            self._steps(message.steps, {} if message.as_of_us is None
                        else {message.origin: message.as_of_us}, change)
        else:
            steps = self._events(message if isinstance(message, ColumnBatch)
                                 else message.columns(), change)
            as_of = self.as_of()
            for j, group in _by_journey(steps, self.spec.partitions).items():
                forwards[j] = StepBatch(self.partition, as_of, group)
        self.keyed_next = keyed_offset + 1
        self._advance_horizon()
        if session != self._session:
            self._session, self._seq = session, 0
        self._seq += 1
        return Outcome(change.delta(session, self._seq), forwards)

    def as_of(self) -> int | None:
        """Time up to which every source partition is in this partition (and forwarded)."""
        return min(self.progress.values()) if self.progress else None

    def _events(self, batch: ColumnBatch, change: _Change) -> Steps:
        cols = BatchColumns.of(batch)
        new = self._unapplied(cols.sources, cols.offsets, change)
        self._dead(batch.dead, change)
        steps: Steps = []
        if new.any():
            fresh = np.flatnonzero(new)
            change.counters["read"] += len(fresh)
            occurred = cols.occurred[fresh]
            top = int(occurred.max())
            if self.watermark_us is None or top > self.watermark_us:
                self.watermark_us = top
            horizon = self.horizon_hour
            inside = (np.ones(len(fresh), bool) if horizon is None
                      else occurred // HOUR_US >= horizon)
            beyond = fresh[~inside]
            if len(beyond):
                # Outside retention: the lake answers for it. Journeys still learn the
                # step, because a journey's t1 and reached step span all of time.
                change.counters["accepted"] += len(beyond)
                change.counters["beyond_retention"] += len(beyond)
                steps.extend(self._steps_of(cols, beyond))
            counted = self._count_unique(cols, fresh[inside], occurred[inside], change)
            for tenant, campaign, hour, m in fold_columns(cols, counted,
                                                          self.spec.engaged_seconds):
                change.buckets[(tenant, campaign, hour)] = m
            steps.extend(self._steps_of(cols, counted))
        self._marks(batch, change)
        return steps

    def _steps_of(self, cols: BatchColumns, rows: npt.NDArray[np.int64]) -> Steps:
        """The funnel steps among `rows`: events of type funnel_step whose label is a
        step, with a customer, as (tenant, campaign, customer, step index, occurred)."""
        step_of = np.array([-1 if (i := self.spec.funnel.index(label)) is None else i
                            for label in cols.labels] + [-1], np.int32)
        step = np.where(cols.kinds[rows] == _FUNNEL_STEP, step_of[cols.label[rows]], -1)
        picked = rows[(step >= 0) & (cols.customer[rows] >= 0)]
        if not len(picked):
            return []
        campaigns = [*cols.campaigns, None]
        return [(cols.tenants[t], campaigns[c], cols.customers[u], int(step_of[label]), at)
                for t, c, u, label, at in zip(
                    cols.tenant[picked].tolist(), cols.campaign[picked].tolist(),
                    cols.customer[picked].tolist(), cols.label[picked].tolist(),
                    cols.occurred[picked].tolist(), strict=True)]

    def _unapplied(self, sources: npt.NDArray[np.int32], offsets: npt.NDArray[np.int64],
                   change: _Change) -> npt.NDArray[np.bool_]:
        """Which events were not applied before (a re-forwarded poll repeats some)."""
        new = np.ones(len(sources), bool)
        for source in np.unique(sources).tolist():
            mine = sources == source
            new[mine] = offsets[mine] > self.applied.get(source, -1)
            if new[mine].any():
                top = int(offsets[mine].max())
                change.applied[source] = max(change.applied.get(source, -1), top)
        return new

    def _dead(self, dead: list[tuple[int, int, str]], change: _Change) -> None:
        for source, offset, reason in dead:
            if offset <= self.applied.get(source, -1):
                continue
            change.applied[source] = max(change.applied.get(source, -1), offset)
            change.counters["read"] += 1
            change.counters["dead_letters"] += 1
            change.counters[f"dead_letter:{reason}"] += 1

    def _count_unique(self, cols: BatchColumns, fresh: npt.NDArray[np.int64],
                      occurred: npt.NDArray[np.int64], change: _Change
                      ) -> npt.NDArray[np.int64]:
        """Dedup `fresh` (indices into the batch); returns the ones counted now."""
        if not len(fresh):
            return fresh
        hi, lo, contents = cols.hi[fresh], cols.lo[fresh], cols.contents[fresh]
        days = (occurred // DAY_US).astype(np.int32)
        first, inverse = unique_digests(hi, lo)
        found, stored = self.seen.lookup(hi[first], lo[first], days[first])
        counted = (np.arange(len(hi)) == first[inverse]) & ~found[inverse]
        reference = np.where(found[inverse], stored[inverse], contents[first[inverse]])
        duplicates = ~counted
        conflicting = duplicates & (contents != reference)
        self.seen.add(hi[counted], lo[counted], contents[counted], days[counted])
        change.seen.append(journal_entries(hi[counted], lo[counted], contents[counted],
                                           days[counted]))
        for name, n in (("accepted", int(counted.sum())), ("duplicates", int(duplicates.sum())),
                        ("conflicting_duplicates", int(conflicting.sum()))):
            if n:
                change.counters[name] += n
        counted_now: npt.NDArray[np.int64] = fresh[counted]
        return counted_now

    def _marks(self, batch: ColumnBatch, change: _Change) -> None:
        change.progress = _advance(self.progress, batch.progress)
        for p, mark in batch.lake.items():
            old = self.lake.get(p)
            if old is not None and mark.as_of_us < old.as_of_us:  # never move back in time
                mark = msgspec.structs.replace(mark, as_of_us=old.as_of_us,
                                               flushed_at_us=old.flushed_at_us)
            if mark != old:
                change.lake[p] = mark
        self.lake.update(change.lake)

    def _steps(self, steps: Steps, as_of: dict[int, int], change: _Change) -> None:
        n = len(self.spec.funnel.steps)
        horizon = -(1 << 62) if self.horizon_hour is None else self.horizon_hour
        journeys, changed, advance = self.journeys, change.journeys, funnel.advance
        for tenant, campaign, customer, step, at_us in steps:
            group = journeys.get((tenant, campaign))
            if group is None:
                group = journeys[(tenant, campaign)] = {}
            moved = advance(group.get(customer), n, step, at_us, HOUR_US)
            if moved is None:
                continue
            new, before, after = moved
            group[customer] = new
            changed[(tenant, campaign, customer)] = new
            if before is not None and before[0] >= horizon:
                change.count_journey(tenant, campaign, before, -1)
            if after is not None and after[0] >= horizon:
                change.count_journey(tenant, campaign, after, 1)
        for origin, origin_as_of in as_of.items():
            if origin_as_of > self.upstream.get(origin, -1):
                self.upstream[origin] = change.upstream[origin] = origin_as_of

    def _advance_horizon(self) -> None:
        if self.watermark_us is None:
            return
        horizon = self.watermark_us // HOUR_US - self.spec.retention_hours
        if self.horizon_hour is None or horizon > self.horizon_hour:
            old_day = None if self.horizon_hour is None else self.horizon_hour // HOURS_PER_DAY
            self.horizon_hour = horizon
            for key in [k for k in self.buckets if k[2] < horizon]:
                del self.buckets[key]
            if old_day is None or horizon // HOURS_PER_DAY > old_day:
                self.seen.expire(horizon // HOURS_PER_DAY)

    def _add_buckets(self, buckets: list[tuple[str, str | None, int, Measures]]) -> None:
        for tenant, campaign, hour, m in buckets:
            if self.horizon_hour is not None and hour < self.horizon_hour:
                continue
            bucket = self.buckets.get((tenant, campaign, hour))
            if bucket is None:
                bucket = self.buckets[(tenant, campaign, hour)] = Measures()
            bucket.add(m)
            if bucket.is_empty():
                del self.buckets[(tenant, campaign, hour)]

    # ---- journal fold --------------------------------------------------------------

    def apply_delta(self, delta: Delta) -> None:
        for source, offset in delta.applied.items():
            if offset > self.applied.get(source, -1):
                self.applied[source] = offset
        self.counters.update(delta.counters)
        if delta.seen:
            self.seen.add_entries(entries_from_journal(delta.seen))
        for tenant, campaign, customer, journey in delta.journeys:
            self.journeys.setdefault((tenant, campaign), {})[customer] = journey
        self._add_buckets(delta.buckets)
        self.watermark_us = delta.watermark_us
        _advance(self.progress, delta.progress)
        _advance(self.upstream, delta.upstream)
        self.lake.update(delta.lake)
        self.keyed_next = max(self.keyed_next, delta.keyed_next)
        self.reported.update(delta.stats)
        self._advance_horizon()

    # ---- checkpoints ---------------------------------------------------------------

    def body(self, epoch: str, offset: int, session: str, seq: int, written_at_us: int) -> Body:
        """This state as a checkpoint stamped at journal `offset` (dedup flushed first)."""
        self.seen.flush()
        return Body(
            format=FORMAT, partition=self.partition, definitions=self.spec.definitions(),
            epoch=epoch, offset=offset, session=session, seq=seq,
            written_at_us=written_at_us, applied=dict(self.applied),
            counters=dict(self.counters), watermark_us=self.watermark_us,
            horizon_hour=self.horizon_hour, progress=dict(self.progress),
            upstream=dict(self.upstream), lake=dict(self.lake), keyed_next=self.keyed_next,
            buckets=[(t, c, h, m) for (t, c, h), m in self.buckets.items()],
            journeys=[(t, c, u, j) for (t, c), group in self.journeys.items()
                      for u, j in group.items()],
            runs=[RunRef.of(run) for run in self.seen.runs()],
            stats={**self.reported, **self.stats},
        )

    def load(self, body: Body, saved_filter: bytes | None = None) -> None:
        """Become the state `body` holds (its runs must be in the seen-set's store;
        `saved_filter` is the dedup filter saved with it, if the local disk kept it)."""
        self.applied = dict(body.applied)
        self.counters = Counter(body.counters)
        self.watermark_us, self.horizon_hour = body.watermark_us, body.horizon_hour
        self.progress, self.upstream = dict(body.progress), dict(body.upstream)
        self.lake = dict(body.lake)
        self.keyed_next = body.keyed_next
        self.buckets = {(t, c, h): m for t, c, h, m in body.buckets}
        self.journeys = {}
        for tenant, campaign, customer, journey in body.journeys:
            self.journeys.setdefault((tenant, campaign), {})[customer] = journey
        self.seen.restore((ref.run() for ref in body.runs), saved_filter)
        self.reported = dict(body.stats)
        self._session = None


class _Change:
    """What one message changes, collected for its delta."""

    def __init__(self, state: PartitionState) -> None:
        self.state = state
        self.applied: dict[int, int] = {}
        self.counters: Counter[str] = Counter()
        self.buckets: dict[tuple[str, str | None, int], Measures] = {}
        self.seen: list[bytes] = []
        self.journeys: dict[tuple[str, str | None, str], bytes] = {}
        self.progress: dict[int, int] = {}
        self.upstream: dict[int, int] = {}
        self.lake: dict[int, LakeMark] = {}

    def count_journey(self, tenant: str, campaign: str | None, position: tuple[int, int],
                      sign: int) -> None:
        """A journey enters (+1) or leaves (-1) the funnel count at `position` (hour of
        its t1, reached step - 1)."""
        hour, reached = position
        bucket = self.buckets.get((tenant, campaign, hour))
        if bucket is None:
            bucket = self.buckets[(tenant, campaign, hour)] = Measures()
        total = bucket.funnel.get(reached, 0) + sign
        if total:
            bucket.funnel[reached] = total
        else:
            del bucket.funnel[reached]

    def delta(self, session: str, seq: int) -> Delta:
        state = self.state
        for source, offset in self.applied.items():
            state.applied[source] = max(offset, state.applied.get(source, -1))
        state.counters.update(self.counters)
        buckets = [(t, c, h, m) for (t, c, h), m in self.buckets.items() if not m.is_empty()]
        state._add_buckets(buckets)
        stats, state.stats = state.stats, {}
        state.reported.update(stats)
        return Delta(
            session=session, seq=seq, applied=self.applied, counters=dict(self.counters),
            buckets=buckets, seen=b"".join(self.seen),
            journeys=[(t, c, u, j) for (t, c, u), j in self.journeys.items()],
            watermark_us=state.watermark_us, horizon_hour=state.horizon_hour,
            progress=self.progress, upstream=self.upstream, lake=self.lake,
            keyed_next=state.keyed_next, stats=stats,
        )


def merge_steps(batches: Iterable[tuple[int, StepBatch]]) -> dict[int, JourneySteps]:
    """(destination, batch) pairs as one message per destination, steps in order, each
    sender's newest `as_of` (heartbeats, with no steps, included)."""
    out: dict[int, JourneySteps] = {}
    for j, batch in batches:
        merged = out.get(j)
        if merged is None:
            merged = out[j] = JourneySteps({}, [])
        merged.steps.extend(batch.steps)
        if batch.as_of_us is not None and batch.as_of_us > merged.as_of.get(batch.origin, -1):
            merged.as_of[batch.origin] = batch.as_of_us
    return out


def _by_journey(steps: Steps, partitions: int) -> dict[int, Steps]:
    out: dict[int, Steps] = {}
    for step in steps:
        out.setdefault(journey_partition(step[0], step[1], step[2], partitions), []).append(step)
    return out


def _advance(current: dict[int, int], incoming: dict[int, int]) -> dict[int, int]:
    """Raise `current` to `incoming` where it is ahead; returns what moved."""
    moved = {p: t for p, t in incoming.items() if t > current.get(p, -(1 << 62))}
    current.update(moved)
    return moved
