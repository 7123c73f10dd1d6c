"""A bounded local copy of an object-storage lake's files, read by DuckDB as a folder.

Why: DuckDB cannot load httpfs here, so an `s3://` lake is read through pyarrow
datasets, and a dataset made for each statement costs two requests per file (the
Parquet footer, then the data). A tenant's lake is hundreds to thousands of small
files, so every dashboard query paid thousands of requests (10-40x the folder lake's
time on a local moto server; billed and slow on real S3 too). Lake files never change
under their name (see below) and are small, so each is fetched whole once, several at
a time, into `<PULSE_STATE_DIR>/lake-cache/`, and DuckDB reads the copies with the
same `read_parquet([...])` as a folder lake: a warm query makes no request at all.
Measured on one 1,713-object lake on moto (warm medians, the same load): a dataset per
statement 7.1 s; one dataset kept per listing, so that each fragment's footer is read
once, 3.1 s; these copies 0.44 s, the folder lake 0.78 s. The first query of a tenant
pays the fetches (4.5 s there: a HEAD and a GET per object, as pyarrow opens a stream).

Why it stays exact: a copy is named by the object's path, size and modification time,
as the listing the reader already trusts gave them, so it stands only for that object.
A lake file's name is rewritten only by a redone flush of the same offsets, with the
same rows; even then it has a new modification time, so a new copy is fetched. A
compaction changes which names are live, which the listing (and its own cache, see
`api.lake`) already handles; the copies of merged-away files are not asked for again
and age out. A file that vanished between the listing and its fetch fails as "No such
file", which `lakefs.retry_vanished` answers by listing again. A copy deleted under the
cache (an operator cleaning the folder) is found missing and fetched again.

Bounded: at most `max_bytes` of copies per process, the least recently used evicted
first, never one a running statement reads (it is pinned). The files of a statement
that do not fit are read from the store as before (`LakeCache.open` returns them apart).
Each process owns a slot folder of its own (an flock, released even by kill -9, so a
restarted API finds its warm copies), so no process deletes what another reads.

`pulse sql` does not use it: its statements are arbitrary, and a filter on `date` or
`tenant_id` prunes files inside a dataset scan, which fetching every file first would
defeat (see `api.sql`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from pulse.lakefs import Entry, LakeStore, vanished
from pulse.settings import Settings

log = logging.getLogger("pulse.lakecache")

FETCH_THREADS = 8
"""Objects fetched at once: S3 serves requests in parallel, one connection each."""
MAX_SLOTS = 64
"""Processes on one machine that can each hold a cache folder of one lake."""


def for_store(store: LakeStore, settings: Settings) -> LakeCache | None:
    """The cache `settings` ask for over `store` (None for a folder lake, which needs
    none, or with `PULSE_LAKE_CACHE_MB=0`). A cache that cannot be made costs speed,
    never answers: the lake is then read from the store, and the log says what to fix."""
    if store.local or settings.lake_cache_mb <= 0:
        return None
    try:
        return LakeCache(store, os.path.join(settings.state_dir, "lake-cache"),
                         int(settings.lake_cache_mb * 2**20))
    except OSError as exc:
        log.warning("reading the lake without a local cache: %s", exc)
        return None


@contextmanager
def reading(store: LakeStore, cache: LakeCache | None, files: list[str],
            entries: dict[str, Entry], timeout: float | None = None) -> Iterator[Local]:
    """How DuckDB reads `files` (`entries`: their listing): a folder lake's where they
    are; an object store's from the local copies of `cache` while they are pinned,
    and those it has no room for (or all, without a cache) through the store."""
    if store.local:
        yield Local([store.arrow_path(f) for f in files], [])
    elif cache is None:
        yield Local([], files)
    else:
        with cache.open(files, entries, timeout) as local:
            yield local


class FetchTimeout(Exception):
    """The files of a statement were not all fetched in time."""


@dataclass(frozen=True)
class Local:
    """How a statement reads its files: `paths` local copies, `remote` (lake-relative
    paths) from the store, because the cache has no room for them now."""

    paths: list[str]
    remote: list[str]


class LakeCache:
    """Whole-file local copies of the lake files of one store, LRU by bytes."""

    def __init__(self, store: LakeStore, folder: str, max_bytes: int,
                 threads: int = FETCH_THREADS) -> None:
        self.store = store
        self.max_bytes = max_bytes
        lake_id = hashlib.sha256(store.uri("").encode()).hexdigest()[:16]
        base = os.path.join(folder, lake_id)
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot make the lake cache folder {base} ({exc.strerror}); fix "
                          "PULSE_STATE_DIR, or set PULSE_LAKE_CACHE_MB=0") from None
        self._lock_file, self.root = _claim_slot(base)
        self._lock = threading.Lock()
        self._copies: OrderedDict[str, int] = OrderedDict()
        """Local path -> size, least recently used first."""
        self._bytes = 0
        self._pins: dict[str, int] = {}
        self._fetching: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="lake-fetch")
        self.fetches = 0
        """Objects fetched (the cache's misses), for tests and metrics."""
        self._adopt()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._lock_file.close()

    def _adopt(self) -> None:
        """Take over the copies a previous process of this slot left, oldest first;
        a fetch cut short, or a copy whose size is not the one its name says (the
        machine lost power before the disk had it all), is deleted."""
        found = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                stat = os.stat(path)
                if _named_size(name) != stat.st_size:
                    os.unlink(path)
                    continue
                found.append((stat.st_mtime, path, stat.st_size))
        for _, path, size in sorted(found):
            self._copies[path] = size
            self._bytes += size
        with self._lock:
            self._evict(0)

    def path(self, rel: str, entry: Entry) -> str:
        """Where the copy of the object `rel`, as listed in `entry`, lives: keyed by its
        size and modification time, and keeping the lake's folders (so hive partition
        columns read the same as from the lake)."""
        stem = rel[:-len(".parquet")] if rel.endswith(".parquet") else rel
        return os.path.join(self.root, f"{stem}~{entry.size}~{int(entry.mtime * 1000)}.parquet")

    @contextmanager
    def open(self, files: list[str], entries: dict[str, Entry],
             timeout: float | None = None) -> Iterator[Local]:
        """The local copies of `files` (fetched now if missing), pinned until the block
        ends; `entries` holds each file's listing. A file listed without an entry, or
        with no room left, is read remotely. Raises `FetchTimeout` if the fetches take
        longer than `timeout` seconds (they go on, for the next statement)."""
        wanted: list[tuple[str, str, int]] = []
        remote: list[str] = []
        for rel in files:
            entry = entries.get(rel)
            if entry is None:
                remote.append(rel)
            else:
                wanted.append((rel, self.path(rel, entry), entry.size))
        missing = {path for _, path, _ in wanted if not os.path.exists(path)}
        pinned: set[str] = set()
        waits: list[Future[None]] = []
        with self._lock:
            for rel, path, size in wanted:
                if path in self._fetching:
                    waits.append(self._fetching[path])
                elif path in self._copies and path not in missing:
                    self._copies.move_to_end(path)
                else:
                    self._forget(path)
                    if not self._evict(size):
                        remote.append(rel)
                        continue
                    self._copies[path] = size
                    self._bytes += size
                    self.fetches += 1
                    waits.append(self._fetch_later(rel, path))
                self._pins[path] = self._pins.get(path, 0) + 1
                pinned.add(path)
        try:
            done, late = wait(waits, timeout)
            if late:
                raise FetchTimeout(f"{len(late)} of {len(waits)} lake files were not fetched "
                                   f"from {self.store.uri('')} within {timeout:.0f} s")
            for future in done:
                future.result()
            yield Local([path for _, path, _ in wanted if path in pinned], remote)
        finally:
            with self._lock:
                for path in pinned:
                    self._pins[path] -= 1
                    if not self._pins[path]:
                        del self._pins[path]

    def _fetch_later(self, rel: str, path: str) -> Future[None]:
        """Fetch `rel` into `path` on the pool. Call with the lock held."""
        future = self._pool.submit(self._fetch, rel, path)
        self._fetching[path] = future
        return future

    def _fetch(self, rel: str, path: str) -> None:
        """One fetch, accounted for before its future is done: on failure the copy is
        forgotten, so the next statement asks again."""
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        ok = False
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as out:
                _copy(self.store, rel, out)
            os.replace(tmp, path)
            ok = True
        finally:
            if not ok:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            with self._lock:
                del self._fetching[path]
                if not ok:
                    self._forget(path)

    def _forget(self, path: str) -> None:
        size = self._copies.pop(path, None)
        if size is not None:
            self._bytes -= size

    def _evict(self, incoming: int) -> bool:
        """Make room for `incoming` bytes, least recently used first and never a pinned
        copy; False (nothing evicted) if that cannot be done. Call with the lock held."""
        if incoming > self.max_bytes:
            return False
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return True
        victims = []
        for path, size in self._copies.items():
            if path not in self._pins and path not in self._fetching:
                victims.append(path)
                excess -= size
                if excess <= 0:
                    break
        if excess > 0:
            return False
        for path in victims:
            self._forget(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return True

    @property
    def bytes(self) -> int:
        """Bytes of the copies held now."""
        return self._bytes


def _named_size(name: str) -> int | None:
    """The size a copy's name (`LakeCache.path`) says it has; None if it is no copy."""
    parts = name.rsplit("~", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].endswith(".parquet"):
        return None
    return int(parts[1])


def _copy(store: LakeStore, rel: str, out: IO[bytes]) -> None:
    """The object `rel` into `out`, in one streamed GET; a vanished object raises
    `FileNotFoundError` naming it, which `lakefs.vanished` recognises."""
    try:
        with store.arrow_fs.open_input_stream(store.arrow_path(rel)) as source:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        if vanished(exc):
            raise FileNotFoundError(f"No such file: {store.uri(rel)}") from None
        raise


def _claim_slot(base: str) -> tuple[IO[str], str]:
    """The first slot folder under `base` no live process holds, locked for this one."""
    for slot in range(MAX_SLOTS):
        handle = open(os.path.join(base, f"{slot}.lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        root = os.path.join(base, str(slot))
        os.makedirs(root, exist_ok=True)
        return handle, root
    raise OSError(f"{MAX_SLOTS} processes already hold lake caches under {base}; give "
                  "this one its own PULSE_STATE_DIR, or set PULSE_LAKE_CACHE_MB=0")
