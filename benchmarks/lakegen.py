"""A realistic Parquet lake, written straight from arrays: what `pulse bench query` reads.

Ten million events cannot go through `Event` objects one by one in a benchmark's
patience, so the rows are drawn as numpy arrays and written as Arrow tables with the
lake's own schema (`schemas.arrow.EVENT_SCHEMA`), names (`schemas.lake.LakeFile`) and
store (`pulse.lakefs`, a folder or S3). The content is what a worker would have
left behind:

- every event type, several campaigns per tenant (and events without one), a daily
  traffic curve, customers walking funnel journeys (with drop-off, repeated and
  out-of-order steps, and a label that is not a step), intents, tags and usage;
- about 5 % exact duplicate ids, arriving a little after their original, in the same
  input partition (producers key by customer) and possibly another flush;
- 8 input partitions, each sealing a flush every few hours of arrival time, so a
  (tenant, date) folder holds dozens of small files, and late events leave small files
  in older folders; file times are set to when the flush would have been written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pulse.lakefs import LakeStore
from pulse.schemas import lake
from pulse.schemas.arrow import EVENT_SCHEMA, UTC_MICROS
from pulse.streams.lake_sink import Flush, LakeWriter

SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US

TENANTS = ("acme", "globex", "initech")
TENANT_SHARE = (0.5, 0.3, 0.2)
CAMPAIGNS = ("renewals", "spring-promo", "winback", "onboarding", "survey")
CAMPAIGN_SHARE = (0.35, 0.25, 0.15, 0.10, 0.05)  # the remaining 10 %: no campaign
TYPES = ("call_ended", "chat_ended", "intent_detected", "funnel_step", "tag_changed", "usage")
TYPE_SHARE = {"call_ended": 0.30, "chat_ended": 0.15, "intent_detected": 0.18,
              "tag_changed": 0.05, "usage": 0.10}  # funnel_step: the rest, as journeys
FUNNEL_SHARE = 0.22
STEPS = ("picked_up", "interested", "qualified")
LABELS = ("buy", "cancel", "question", "callback", "complaint",  # intents
          *STEPS, "voicemail",  # funnel_step labels; voicemail is not a step
          "vip", "do-not-call")  # tags
INTENT_SHARE = (0.15, 0.10, 0.45, 0.20, 0.10)
CATEGORIES = ("call_minutes", "sms", "tts_characters")
CHANNELS = ("call", "chat")
CUSTOMERS_PER_TENANT = 2_000_000
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 15, 15,
                         13, 14, 15, 14, 12, 10, 8, 6, 4, 3, 2, 1], dtype=float)
LATE_SHARE = 0.03
LATE_MAX_US = 6 * HOUR_US
METADATA = tuple(f'{{"agent": "a{i:02d}", "queue": "{q}"}}'
                 for i in range(40) for q in ("sales", "care"))


@dataclass(frozen=True)
class LakeSpec:
    """What to generate: `n` rows (duplicates included) over `days` ending at `end_us`."""

    n: int
    end_us: int
    days: int = 60
    partitions: int = 8
    flushes_per_day: int = 6
    duplicates: float = 0.05
    epoch: str = "b3c0ffee0001"
    seed: int = 7

    @property
    def start_us(self) -> int:
        return self.end_us - self.days * DAY_US


@dataclass(frozen=True)
class LakeStats:
    rows: int
    unique: int
    files: int
    bytes: int
    seconds: float


class Columns:
    """Rows as integer codes into small pools (-1 = null), built up kind by kind."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **columns: np.ndarray) -> None:
        n = len(columns["occurred"])
        for name in ("tenant", "type", "customer", "campaign", "channel", "category", "label",
                     "metadata"):
            columns.setdefault(name, np.full(n, -1, np.int32))
        columns.setdefault("value", np.full(n, np.nan))
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(values)

    def done(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.parts.items()}


def _times(rng: np.random.Generator, spec: LakeSpec, n: int) -> np.ndarray:
    """Event times over the spec's days, following the daily traffic curve."""
    days = rng.integers(0, spec.days, n)
    hours = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    return spec.start_us + days * DAY_US + hours * HOUR_US + rng.integers(0, HOUR_US, n)


def _campaigns(rng: np.random.Generator, n: int) -> np.ndarray:
    share = np.array([*CAMPAIGN_SHARE, 1 - sum(CAMPAIGN_SHARE)])
    codes = rng.choice(len(share), n, p=share)
    return np.where(codes == len(CAMPAIGNS), -1, codes).astype(np.int32)


def _customers(rng: np.random.Generator, tenant: np.ndarray, heavy: bool) -> np.ndarray:
    """Customer numbers (unique across tenants); `heavy`: a few customers talk a lot."""
    if heavy:
        k = np.minimum((rng.pareto(1.2, len(tenant)) * 20_000).astype(np.int64),
                       CUSTOMERS_PER_TENANT - 1)
    else:
        k = rng.integers(0, CUSTOMERS_PER_TENANT, len(tenant))
    return (tenant * CUSTOMERS_PER_TENANT + k).astype(np.int32)


def _tenants(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(len(TENANTS), n, p=TENANT_SHARE).astype(np.int32)


def _label(name: str) -> int:
    return LABELS.index(name)


def journeys(rng: np.random.Generator, spec: LakeSpec, target: int, cols: Columns) -> int:
    """Funnel-step events of customer journeys, about `target` of them; returns the count."""
    count = max(1, int(target / 1.95))
    tenant = _tenants(rng, count)
    customer = _customers(rng, tenant, heavy=False)
    campaign = np.where(rng.random(count) < 0.05, -1,
                        rng.choice(len(CAMPAIGNS), count, p=np.array(CAMPAIGN_SHARE) / 0.9))
    t0 = _times(rng, spec, count)
    depth = 1 + (rng.random(count) < 0.5)  # picked_up, then interested...
    depth = depth + ((depth == 2) & (rng.random(count) < 0.4))  # ...then qualified
    added = 0
    at = t0.copy()
    for step in range(len(STEPS)):
        keep = depth > step
        if step:
            at = at + rng.exponential(DAY_US / 2, count).astype(np.int64)
        keep &= at < spec.end_us
        # 2 % of journeys record "interested" before "picked_up" (out of order).
        when = at.copy()
        if step == 1:
            swap = rng.random(count) < 0.02
            when = np.where(swap, t0 - rng.integers(HOUR_US, 2 * HOUR_US, count), when)
        when = np.maximum(when, spec.start_us)
        cols.add(tenant=tenant[keep], type=np.full(keep.sum(), TYPES.index("funnel_step"),
                                                    np.int32),
                 customer=customer[keep], campaign=campaign[keep],
                 label=np.full(keep.sum(), _label(STEPS[step]), np.int32), occurred=when[keep])
        added += int(keep.sum())
    for name, share, offset in (("picked_up", 0.04, DAY_US), ("voicemail", 0.25, -HOUR_US)):
        # Repeated first steps (a later S1 must not move t1) and voicemails (not a step).
        pick = rng.random(count) < share
        when = np.clip(t0[pick] + rng.integers(0, abs(offset), pick.sum()) * np.sign(offset),
                       spec.start_us, spec.end_us - 1)
        cols.add(tenant=tenant[pick], type=np.full(pick.sum(), TYPES.index("funnel_step"),
                                                    np.int32),
                 customer=customer[pick], campaign=campaign[pick],
                 label=np.full(pick.sum(), _label(name), np.int32), occurred=when)
        added += int(pick.sum())
    return added


def other_events(rng: np.random.Generator, spec: LakeSpec, n: int, cols: Columns) -> None:
    """Conversations, intents, tags and usage: `n` events in the shares of TYPE_SHARE."""
    kinds = list(TYPE_SHARE)
    share = np.array([TYPE_SHARE[k] for k in kinds])
    kind = rng.choice(len(kinds), n, p=share / share.sum())
    for i, name in enumerate(kinds):
        m = int((kind == i).sum())
        tenant = _tenants(rng, m)
        row: dict[str, np.ndarray] = {
            "tenant": tenant, "type": np.full(m, TYPES.index(name), np.int32),
            "customer": _customers(rng, tenant, heavy=True), "campaign": _campaigns(rng, m),
            "occurred": _times(rng, spec, m),
        }
        if name in ("call_ended", "chat_ended"):
            # Durations: many short (voicemail, hang-ups), a long tail of real talks.
            row["value"] = np.round(rng.lognormal(3.6, 1.1, m), 3)
            row["value"][rng.random(m) < 0.08] = 0.0
            row["channel"] = np.full(m, 0 if name == "call_ended" else 1, np.int32)
            row["metadata"] = np.where(rng.random(m) < 0.3,
                                       rng.integers(0, len(METADATA), m), -1).astype(np.int32)
        elif name == "intent_detected":
            row["label"] = rng.choice(5, m, p=INTENT_SHARE).astype(np.int32)
        elif name == "tag_changed":
            row["label"] = np.where(rng.random(m) < 0.8, _label("vip"),
                                    _label("do-not-call")).astype(np.int32)
        else:
            row["customer"] = np.full(m, -1, np.int32)
            row["category"] = rng.integers(0, len(CATEGORIES), m).astype(np.int32)
            row["value"] = np.round(rng.exponential(4.0, m), 2)
        cols.add(**row)


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """`n` random 32-hex-digit ids (as uuid4().hex), built without Python strings."""
    table = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(),
                          np.uint8).reshape(256, 2)
    data = table[rng.integers(0, 256, (n, 16), dtype=np.uint8)].reshape(-1)
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(data)])


def _pool(codes: np.ndarray, pool: pa.Array) -> pa.Array:
    return pc.take(pool, pa.array(codes, mask=codes < 0))


def _customer_ids(codes: np.ndarray) -> pa.Array:
    numbers = pa.array(codes % CUSTOMERS_PER_TENANT, mask=codes < 0)
    return pc.binary_join_element_wise("cus-", pc.cast(numbers, pa.string()), "")


def to_table(rows: dict[str, np.ndarray], ids: pa.Array) -> pa.Table:
    """The lake columns, in the order of `rows` (already sorted)."""
    value = rows["value"]
    columns = [
        pc.take(ids, pa.array(rows["id"])),
        _pool(rows["type"], pa.array(TYPES)),
        _customer_ids(rows["customer"]),
        _pool(rows["campaign"], pa.array(CAMPAIGNS)),
        _pool(rows["channel"], pa.array(CHANNELS)),
        _pool(rows["category"], pa.array(CATEGORIES)),
        _pool(rows["label"], pa.array(LABELS)),
        pa.array(value, mask=np.isnan(value)),
        pa.array(rows["occurred"]).cast(UTC_MICROS),
        _pool(rows["metadata"], pa.array(METADATA)),
        pa.array(np.ones(len(value), np.int32)),
        pa.array(rows["ingested"]).cast(UTC_MICROS),
        pa.array(rows["partition"].astype(np.int32)),
        pa.array(rows["offset"]),
    ]
    return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA)


Ranges = dict[tuple[int, int], tuple[int, int]]
"""(partition, flush) -> the flush's (first, last) offset."""


def arrive(rng: np.random.Generator, spec: LakeSpec, rows: dict[str, np.ndarray],
           unique: int) -> tuple[dict[str, np.ndarray], Ranges]:
    """Duplicates, input partitions, arrival order, offsets and flushes; sorted by file."""
    dup_of = rng.integers(0, unique, spec.n - unique)
    rows = {k: np.concatenate([v, v[dup_of]]) for k, v in rows.items()}
    rows["id"] = np.concatenate([np.arange(unique), dup_of])
    n = spec.n
    delay = rng.exponential(3 * SECOND_US, n).astype(np.int64)
    late = rng.random(n) < LATE_SHARE
    delay[late] = rng.integers(0, LATE_MAX_US, late.sum())
    delay[unique:] += rng.exponential(20 * SECOND_US, n - unique).astype(np.int64)
    arrival = np.minimum(rows["occurred"] + delay, spec.end_us - 1)
    # Producers key by customer (usage by tenant): copies share their original's partition.
    key = np.where(rows["customer"] >= 0, rows["customer"], rows["tenant"] * 7919)
    partition = (key.astype(np.int64) * 2654435761 % (1 << 32)) % spec.partitions
    order = np.lexsort((arrival, partition))
    rows = {k: v[order] for k, v in rows.items()}
    partition, arrival = partition[order], arrival[order]
    starts = np.searchsorted(partition, np.arange(spec.partitions))
    rows["offset"] = np.arange(n, dtype=np.int64) - starts[partition]
    rows["partition"] = partition
    rows["ingested"] = arrival
    rows["flush"] = (arrival - spec.start_us) // (DAY_US // spec.flushes_per_day)
    rows["day"] = rows["occurred"] // DAY_US
    # In arrival order per partition, a flush is a run of offsets.
    key = partition * 1_000_000 + rows["flush"]
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    ranges = {(int(key[a] // 1_000_000), int(key[a] % 1_000_000)):
              (int(rows["offset"][a]), int(rows["offset"][b - 1]))
              for a, b in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True)}
    by_file = np.lexsort((rows["offset"], rows["flush"], rows["partition"], rows["day"],
                          rows["tenant"]))
    return {k: v[by_file] for k, v in rows.items()}, ranges


def write_files(store: LakeStore, spec: LakeSpec, rows: dict[str, np.ndarray], ranges: Ranges,
                table: pa.Table, progress: Callable[[str], None]) -> tuple[int, int]:
    """One file per (tenant, date, partition, flush), named by the flush's offset range."""
    keys = np.stack([rows["tenant"], rows["day"], rows["partition"], rows["flush"]])
    cuts = np.flatnonzero(np.any(keys[:, 1:] != keys[:, :-1], axis=0)) + 1
    bounds = list(zip(np.r_[0, cuts], np.r_[cuts, len(table)], strict=True))
    flush_us = DAY_US // spec.flushes_per_day

    def write(bound: tuple[int, int]) -> int:
        a, b = bound
        tenant, day = TENANTS[rows["tenant"][a]], int(rows["day"][a])
        partition, flush = int(rows["partition"][a]), int(rows["flush"][a])
        first, last = ranges[(partition, flush)]
        name = lake.LakeFile(spec.epoch, partition, first, last).name
        rel = f"{lake.event_dir(tenant, day)}/{name}"
        size = store.put_parquet(rel, table.slice(a, b - a))
        if store.local:  # object stores keep their own times
            written = min(spec.start_us + (flush + 1) * flush_us, spec.end_us) / SECOND_US
            os.utime(store.arrow_path(rel), (written, written))
        return size

    size = 0
    with ThreadPoolExecutor(4) as pool:
        for i, written in enumerate(pool.map(write, bounds), 1):
            size += written
            if i % 2000 == 0 or i == len(bounds):
                progress(f"  wrote {i:,}/{len(bounds):,} files")
    # The intent markers a worker leaves: its last flush per partition.
    writer = LakeWriter(store, spec.epoch, "events")
    for (partition, _), (first, last) in sorted(ranges.items()):
        writer.write_intent(Flush(partition, first, last))
    return len(bounds), size


def generate(store: LakeStore, spec: LakeSpec, progress: Callable[[str], None]) -> LakeStats:
    """Write the lake of `spec` into `store`."""
    started = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    unique = spec.n - round(spec.n * spec.duplicates)
    cols = Columns()
    progress(f"  drawing {unique:,} unique events and {spec.n - unique:,} duplicates")
    steps = journeys(rng, spec, int(unique * FUNNEL_SHARE), cols)
    other_events(rng, spec, unique - steps, cols)
    rows, ranges = arrive(rng, spec, cols.done(), unique)
    progress(f"  building Arrow columns ({time.perf_counter() - started:.1f} s)")
    table = to_table(rows, hex_ids(rng, unique))
    files, size = write_files(store, spec, rows, ranges, table, progress)
    return LakeStats(spec.n, unique, files, size, time.perf_counter() - started)
