"""The API's cached listing of a tenant's lake files: reused while no flush is reported,
listed again once the journal reports one, or a listed file has vanished; on S3, the
local copies of those files (`pulse.lakecache`) read in their place."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pulse.api.groups import TOTAL
from pulse.api.lake import LakeReader, flushes_reported
from pulse.lakecache import LakeCache
from pulse.lakefs import LakeStore
from pulse.rollups.journal import Claim, Delta, LakeMark
from pulse.rollups.store import RollupStore
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.settings import Settings
from pulse.streams.lake_sink import Flush, LakeWriter
from tests.s3 import S3Server


def flush_of(partition: int, first: int, n: int, now_us: int) -> Flush:
    flush = Flush(partition, first, first + n - 1)
    for offset in range(first, first + n):
        event = decode_event(
            f'{{"id": "e{partition}-{offset}", "tenant_id": "acme", "event_type": "call_ended",'
            f' "customer_id": "c", "value": 40, "occurred_at": {now_us // 1000 - 5000}}}'
            .encode(), now_us)
        assert isinstance(event, Event)
        flush.add_event(event, offset)
    return flush


def report_flush(store: RollupStore, seq: int, partition: int, flushed_at_us: int) -> None:
    store.fold(0).feed(Delta("s", seq, {}, {}, [], b"", [], None, None, {}, {},
                             {partition: LakeMark(flushed_at_us, flushed_at_us)}, 0, {}), seq)


def conversations(reader: LakeReader, now_us: int) -> int:
    found = asyncio.run(reader.measures("acme", None, [(now_us - 3_600_000_000, now_us)], TOTAL))
    return sum(m.events for m in found.values())


def test_a_listing_is_reused_until_a_flush_is_reported_or_a_file_vanishes(tmp_path: Path):
    now_us = time.time_ns() // 1000
    lake = LakeStore(str(tmp_path / "lake"))
    writer = LakeWriter(lake, "e0", "events")
    rollups = RollupStore()
    rollups.fold(0).feed(Claim("s"), 0)
    reader = LakeReader(lake, 30.0, ("picked_up",), flushes=lambda: flushes_reported(rollups))
    try:
        writer.write(flush_of(0, 0, 5, now_us))
        report_flush(rollups, 1, 0, now_us)
        assert conversations(reader, now_us) == 5 and reader.listings == 1
        assert conversations(reader, now_us) == 5 and reader.listings == 1  # cached

        # A flush written but not yet reported is not claimed by any answer's as_of:
        # the cached listing may leave it out. Once reported, it is listed.
        writer.write(flush_of(1, 0, 3, now_us))
        assert conversations(reader, now_us) == 5 and reader.listings == 1
        report_flush(rollups, 2, 1, now_us + 1)
        assert conversations(reader, now_us) == 8 and reader.listings == 2

        # A compaction put a file's rows under its merged name and deleted it: the
        # cached name has vanished, so the tenant is listed again.
        first = reader.files("acme", None)[0]
        lake.put(first.replace(".parquet", "-c.parquet"), lake.get(first))
        lake.delete(first)
        assert conversations(reader, now_us) == 8 and reader.listings == 3
    finally:
        reader.close()


def test_an_s3_lake_is_read_from_local_copies_exactly(s3: S3Server, tmp_path: Path):
    """The API's reader over S3 with its local cache: each file fetched once, answers
    exact as flushes arrive, a file compacted away between the listing and its fetch
    read again from a fresh listing, and files the cache has no room for read from S3."""
    now_us = time.time_ns() // 1000
    lake = LakeStore.open(s3.new_lake(), Settings.from_env(s3.env()))
    writer = LakeWriter(lake, "e0", "events")
    rollups = RollupStore()
    rollups.fold(0).feed(Claim("s"), 0)
    cache = LakeCache(lake, str(tmp_path / "cache"), 1 << 30)
    reader = LakeReader(lake, 30.0, ("picked_up",), flushes=lambda: flushes_reported(rollups),
                        cache=cache)
    try:
        writer.write(flush_of(0, 0, 5, now_us))
        report_flush(rollups, 1, 0, now_us)
        assert conversations(reader, now_us) == 5 and cache.fetches == 1
        assert conversations(reader, now_us) == 5 and cache.fetches == 1  # a local copy
        writer.write(flush_of(1, 0, 3, now_us))
        report_flush(rollups, 2, 1, now_us + 1)
        assert conversations(reader, now_us) == 8 and cache.fetches == 2

        # Listed (the flush is reported), then merged away before any statement fetched it.
        writer.write(flush_of(2, 0, 4, now_us))
        report_flush(rollups, 3, 2, now_us + 2)
        (listed,) = [f for f in reader.files("acme", None) if "-p0002-" in f]
        listings = reader.listings
        lake.put(listed.replace(".parquet", "-c.parquet"), lake.get(listed))
        lake.delete(listed)
        assert conversations(reader, now_us) == 12 and reader.listings == listings + 1
        assert cache.fetches == 4  # the vanished name (tried), then the merged one

        # Room for the largest file only: some files are read locally, the rest from S3.
        sizes = [e.size for e in lake.walk("events")
                 .get(listed.rpartition("/")[0], [])]
        tight = LakeCache(lake, str(tmp_path / "tight"), max(sizes) + 1)
        small = LakeReader(lake, 30.0, ("picked_up",), cache=tight)
        try:
            assert conversations(small, now_us) == 12
            assert 0 < tight.fetches < len(sizes) and tight.bytes <= max(sizes) + 1
        finally:
            small.close()
    finally:
        reader.close()
