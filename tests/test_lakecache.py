"""The local copies of an s3:// lake's files (`pulse.lakecache`), against a real S3 server.

What the API's lake queries rely on: a copy is fetched once and then read with no
request to the store; the least recently used copies go first when the bound is
reached, never one a running statement reads; an object replaced under the same name
is fetched again; a file gone since the listing fails the way readers retry on; and a
restarted process finds the copies its predecessor left, minus any cut short.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from pulse import lakefs
from pulse.lakecache import LakeCache
from pulse.lakefs import Entry, LakeStore
from pulse.settings import Settings
from tests.s3 import S3Server

FOLDER = "events/tenant_id=acme/date=2026-01-02"


@pytest.fixture
def store(s3: S3Server) -> LakeStore:
    return LakeStore.open(s3.new_lake(), Settings.from_env(s3.env()))


def listing(store: LakeStore) -> dict[str, Entry]:
    return {f"{FOLDER}/{e.name}": e for e in store.list(FOLDER)}


def put(store: LakeStore, name: str, size: int) -> str:
    rel = f"{FOLDER}/{name}"
    store.put(rel, os.urandom(size))
    return rel


def requests_to(s3: S3Server, store: LakeStore, since: int) -> list[tuple[str, str]]:
    """(method, object path) of each request for an object of `store`'s bucket that the
    server logged after byte `since` of its log (listings are left out)."""
    marker = f"/{uuid.uuid4().hex}"
    with pytest.raises(urllib.request.HTTPError):  # a request logged after all before it
        urllib.request.urlopen(f"{s3.endpoint}{marker}", timeout=10)
    deadline = time.monotonic() + 10
    while marker not in (text := s3.log_path.read_text(errors="replace")[since:]):
        assert time.monotonic() < deadline, "the S3 server did not log a request"
        time.sleep(0.05)
    bucket = store.arrow_path("").split("/")[0]
    return re.findall(rf'"(?:\x1b\[[0-9;]*m)*([A-Z]+) /{bucket}/([^ ?]+) HTTP', text)


def log_size(s3: S3Server) -> int:
    return len(s3.log_path.read_text(errors="replace"))


def test_a_miss_is_fetched_once_then_read_with_no_request(store: LakeStore, s3: S3Server,
                                                          tmp_path: Path):
    rels = [put(store, f"f{i}.parquet", 1000 + i) for i in range(3)]
    cache = LakeCache(store, str(tmp_path), 1 << 20)
    try:
        entries = listing(store)
        since = log_size(s3)
        with cache.open(rels, entries) as local:
            assert local.remote == [] and len(local.paths) == 3
        fetched = requests_to(s3, store, since)
        assert sorted(fetched) == sorted((m, store.arrow_path(r).partition("/")[2])
                                         for r in rels for m in ("GET", "HEAD"))
        assert [Path(p).read_bytes() for p in local.paths] == [store.get(r) for r in rels]
        assert cache.fetches == 3 and cache.bytes == 3003
        since = log_size(s3)
        with cache.open(rels, listing(store)) as again:
            assert again.paths == local.paths
        assert cache.fetches == 3
        assert [m for m, _ in requests_to(s3, store, since)] == []  # the listing aside
    finally:
        cache.close()


def test_the_least_recently_used_copy_goes_first_and_a_pinned_one_never(
        store: LakeStore, tmp_path: Path):
    a, b, c = (put(store, f"{n}.parquet", 1000) for n in "abc")
    entries = listing(store)
    cache = LakeCache(store, str(tmp_path), 2500)  # room for two
    try:
        for rels in ([a], [b], [a], [c]):  # b is then the least recently used
            with cache.open(rels, entries):
                pass
        assert cache.bytes == 2000 and cache.fetches == 3
        assert [os.path.exists(cache.path(r, entries[r])) for r in (a, b, c)] == [
            True, False, True]
        with cache.open([a, c], entries) as reading:
            with cache.open([b], entries) as crowded:  # a and c are pinned: no room
                assert crowded.paths == [] and crowded.remote == [b]
            assert all(os.path.exists(p) for p in reading.paths)
        big = put(store, "big.parquet", 3000)  # larger than the whole cache
        with cache.open([big], listing(store)) as local:
            assert local.paths == [] and local.remote == [big]
        assert cache.bytes <= 2500
    finally:
        cache.close()


def test_an_object_replaced_under_its_name_is_fetched_again(store: LakeStore, tmp_path: Path):
    rel = put(store, "f.parquet", 100)
    cache = LakeCache(store, str(tmp_path), 1 << 20)
    try:
        with cache.open([rel], listing(store)):
            pass
        for size in (200, 200):  # another size, then the same size at a later time
            time.sleep(1.1)  # S3 times have whole seconds
            put(store, "f.parquet", size)
            with cache.open([rel], listing(store)) as local:
                assert Path(local.paths[0]).read_bytes() == store.get(rel)
        assert cache.fetches == 3
        assert cache.bytes == 500  # the older copies age out like any other
    finally:
        cache.close()


def test_a_file_gone_since_the_listing_fails_as_readers_retry_on(store: LakeStore,
                                                                 tmp_path: Path):
    kept, gone = put(store, "kept.parquet", 100), put(store, "gone.parquet", 100)
    entries = listing(store)
    store.delete(gone)  # a compaction merged it away after the listing
    cache = LakeCache(store, str(tmp_path), 1 << 20)
    try:
        with pytest.raises(FileNotFoundError) as caught:
            with cache.open([kept, gone], entries):
                pass
        assert lakefs.vanished(caught.value)
        assert cache.bytes == 100  # the copy of `kept` stays, nothing of `gone`
        assert not [n for _, _, names in os.walk(tmp_path) for n in names if ".tmp" in n]
        with cache.open([kept], listing(store)) as local:
            assert local.remote == [] and cache.fetches == 2
    finally:
        cache.close()


def test_copies_outlive_the_process_and_each_process_has_its_own(store: LakeStore,
                                                                tmp_path: Path):
    rels = [put(store, f"f{i}.parquet", 500) for i in range(2)]
    entries = listing(store)
    first = LakeCache(store, str(tmp_path), 1 << 20)
    with first.open(rels, entries) as local:
        paths = local.paths
    second = LakeCache(store, str(tmp_path), 1 << 20)  # another process, beside it
    try:
        assert second.root != first.root and second.bytes == 0
    finally:
        second.close()
        first.close()
    with open(paths[1], "r+b") as copy:  # the machine lost power mid-write
        copy.truncate(100)
    restarted = LakeCache(store, str(tmp_path), 1 << 20)
    try:
        assert restarted.root == first.root and restarted.bytes == 500
        os.unlink(paths[0])  # an operator cleaned the folder
        with restarted.open(rels, entries) as local:
            assert [Path(p).read_bytes() for p in local.paths] == [store.get(r) for r in rels]
        assert restarted.fetches == 2
    finally:
        restarted.close()
