"""The lake's store: the one seam through which every reader and writer reaches files.

`PULSE_LAKE` is a local folder or `s3://bucket/prefix`; everything above this module
(the lake sink, compaction, replay, `pulse sql`, the API's lake queries, rebuilds,
checkpoints) names files by their path relative to the lake root (`events/...`,
`_pulse/...`) and never asks which kind of store it is. A file appears whole or not at
all: written to a temporary name and renamed on a folder, one PUT on object storage
(`pulse.lakefs_s3.S3Store`, the same interface on S3).

Object storage goes through pyarrow's `S3FileSystem`, which Parquet, datasets and so
DuckDB (which cannot load httpfs here) read through directly; fsspec would add a
second client for no gain (DuckDB over a registered fsspec filesystem was 2.3x slower
than over a pyarrow dataset in the measurement of `api.lake`).

A leaf like `pulse.settings`: it imports only the settings and the lake's pure names.
pyarrow is imported by the methods that read or write Parquet, not here: a worker's
rollup process uses a local lake's files only through plain file calls, and without
pyarrow's libraries it stays about 50 MiB smaller (`pulse bench peers`).
"""

from __future__ import annotations

import builtins
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from pulse.schemas import lake
from pulse.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs


class LakeStoreError(Exception):
    """The lake's store cannot be used as configured; the message names what to fix."""


@dataclass(frozen=True)
class Entry:
    """One file directly inside a folder of the lake."""

    name: str
    size: int
    mtime: float
    """Seconds since the epoch of its last write."""


def vanished(exc: BaseException) -> bool:
    """True when `exc` says a file listed a moment ago is gone (a compaction deleted it),
    so listing again and retrying is the answer. DuckDB says it of local files, pyarrow
    (inside DuckDB's scan of a dataset, or alone) of S3 objects; pyarrow reading a local
    file names only its path."""
    if isinstance(exc, FileNotFoundError):
        return True
    text = str(exc)
    return any(t in text for t in ("No files found", "No such file", "Path does not exist",
                                   "NoSuchKey", "HTTP status 404"))


def retry_vanished(attempts: int, run: Callable[[], Any],
                   wait: Callable[[int], None] = lambda attempt: None) -> Any:
    """`run()`, again (up to `attempts` in all) while it fails on a vanished file.

    Every lake reader lists, then reads; a compaction may delete a file in between,
    and its merged file is there by then, so a fresh listing reads the same rows.
    `run` must list afresh each time.
    """
    for attempt in range(attempts):
        try:
            return run()
        except Exception as exc:
            if attempt == attempts - 1 or not vanished(exc):
                raise
        wait(attempt)
    raise AssertionError("unreachable")


class LakeStore:
    """Files under one lake root: a local folder (this class) or S3 (`S3Store`).

    `LakeStore.open(root, settings)` picks the kind; `LakeStore(folder)` is the folder.
    """

    local = True

    def __init__(self, root: str) -> None:
        if "://" in root:
            raise LakeStoreError(
                f"the lake {root!r} is a URL; use LakeStore.open for s3:// lakes")
        self.root = root

    @cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """The filesystem pyarrow and DuckDB read `arrow_path`s through."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem()

    @staticmethod
    def open(root: str, settings: Settings | None = None) -> LakeStore:
        """The store of `root` (`PULSE_LAKE`): a folder, or `s3://bucket/prefix` with the
        endpoint and credentials of `settings` (the standard AWS variables)."""
        if root.startswith("s3://"):
            from .lakefs_s3 import S3Store

            return S3Store(root, settings or Settings())
        if "://" in root:
            raise LakeStoreError(f"PULSE_LAKE must be a folder or s3://bucket/prefix, got "
                                 f"{root!r}")
        return LakeStore(root)

    def uri(self, rel: str) -> str:
        """Where `rel` is, for messages."""
        return os.path.join(os.path.abspath(self.root), rel)

    def arrow_path(self, rel: str) -> str:
        """`rel` as a path of `arrow_fs`, for pyarrow and DuckDB readers."""
        return os.path.join(os.path.abspath(self.root), rel)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def check(self, create: bool = False) -> None:
        """Fail now, naming what to fix, if the lake cannot be used (`create`: made if
        missing, as a worker does; readers leave a missing folder alone)."""
        try:
            if create:
                os.makedirs(self.root, exist_ok=True)
            elif os.path.exists(self.root) and not os.path.isdir(self.root):
                raise NotADirectoryError(20, "not a folder")
        except OSError as exc:
            raise LakeStoreError(f"PULSE_LAKE: cannot use the folder {self.uri('')}: "
                                 f"{exc.strerror}") from None

    def put(self, rel: str, data: bytes) -> None:
        """Write `rel` whole: readers see the old file or the new one, never a part."""
        self.put_with(rel, lambda fh: fh.write(data))

    def put_with(self, rel: str, write: Callable[[IO[bytes]], object]) -> int:
        """Write `rel` whole from `write(file)`; returns its size. If `write` raises,
        nothing appears."""
        path = self._path(rel)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return size

    def get(self, rel: str) -> bytes:
        """The bytes of `rel`; `FileNotFoundError` if there is no such file."""
        with open(self._path(rel), "rb") as fh:
            return fh.read()

    def list(self, rel: str) -> list[Entry]:
        """The files directly in folder `rel`, by name ([] if the folder does not exist)."""
        out = []
        try:
            with os.scandir(self._path(rel)) as entries:
                for entry in entries:
                    try:
                        if entry.is_file():
                            stat = entry.stat()
                            out.append(Entry(entry.name, stat.st_size, stat.st_mtime))
                    except FileNotFoundError:  # deleted while listed
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(out, key=lambda e: e.name)

    def subfolders(self, rel: str) -> builtins.list[str]:
        """The names of the folders directly in `rel`, sorted."""
        try:
            with os.scandir(self._path(rel)) as entries:
                return sorted(e.name for e in entries if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def walk(self, rel: str) -> dict[str, builtins.list[Entry]]:
        """Every file under `rel`, by the folder (relative to the root) holding it."""
        out: dict[str, list[Entry]] = {}
        base = self._path(rel)
        for folder, _, names in os.walk(base):
            rel_folder = os.path.relpath(folder, self.root).replace(os.sep, "/")
            entries = out.setdefault(rel_folder, [])
            for name in names:
                try:
                    stat = os.stat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                entries.append(Entry(name, stat.st_size, stat.st_mtime))
        return {k: sorted(v, key=lambda e: e.name) for k, v in out.items() if v}

    def delete(self, rel: str) -> None:
        """Remove `rel`; a file already gone is not an error."""
        try:
            os.unlink(self._path(rel))
        except FileNotFoundError:
            pass

    def now(self) -> float:
        """The store's clock, to compare with `Entry.mtime`."""
        return time.time()

    # ---- Parquet and DuckDB ----------------------------------------------------------

    def read_table(self, rel: str, columns: builtins.list[str] | None = None) -> pa.Table:
        """One lake file's rows (without hive columns)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.arrow_path(rel), columns=columns, partitioning=None,
                             filesystem=self.arrow_fs)

    def read_schema(self, rel: str) -> pa.Schema:
        import pyarrow.parquet as pq

        return pq.read_schema(self.arrow_path(rel), filesystem=self.arrow_fs)

    def put_parquet(self, rel: str, table: pa.Table) -> int:
        """Write `table` as the Parquet file `rel`, whole; returns its size."""
        import pyarrow.parquet as pq

        return self.put_with(rel, lambda fh: pq.write_table(table, fh, **lake.PARQUET_OPTIONS))

    def dataset(self, rels: builtins.list[str], schema: pa.Schema,
                sizes: dict[str, int] | None = None,
                hive: pa.Schema | None = None) -> ds.Dataset:
        """The files `rels` as one pyarrow dataset (DuckDB scans it with filters and
        projections pushed down), with the `hive` columns of their folders (`date=...`)
        after the file's own. With the `sizes` a listing gave, no file is asked for its
        size again: on S3 that saves a request per file before its footer is read."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        parquet = ds.ParquetFileFormat(
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))
        partitioning = ds.partitioning(hive, flavor="hive") if hive is not None else None
        folders: dict[str, ds.Expression | None] = {}
        fragments = []
        for rel in rels:
            folder = rel.rpartition("/")[0]
            if folder not in folders:
                # parse() takes a file's path: it drops the last part, the file name
                folders[folder] = (partitioning.parse(rel)
                                   if partitioning is not None else None)
            fragments.append(parquet.make_fragment(
                self.arrow_path(rel), self.arrow_fs, partition_expression=folders[folder],
                file_size=(sizes or {}).get(rel)))
        columns = schema if hive is None else pa.schema([*schema, *hive])
        return ds.FileSystemDataset(fragments, columns, parquet, self.arrow_fs)

    # ---- one process at a time -------------------------------------------------------

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Hold the lake-wide lock `name` (yields False when another process holds it).

        On a folder, an flock: it goes with the process, even on kill -9.
        """
        import fcntl

        path = self._path(f"_pulse/{name}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True


# ---- walking the lake ------------------------------------------------------------------
# Every reader and writer (the API, `pulse sql`, `pulse compact`, rebuilds) walks the lake
# with these, so all of them agree on which folders exist and which files are live.


@dataclass(frozen=True)
class LakeDir:
    """One leaf folder of the lake: `events/tenant_id=.../date=...` or `dead_letters/date=...`."""

    kind: str
    rel: str
    day: int
    tenant_id: str | None = None

    def file(self, name: str) -> str:
        """The relative path of the file `name` in this folder."""
        return f"{self.rel}/{name}"


def lake_dir(rel: str) -> LakeDir | None:
    """The leaf folder `rel` names, None if it is none (anything else would break the
    `date` and `tenant_id` columns)."""
    parts = rel.split("/")
    if parts[0] == lake.EVENTS and len(parts) == 3 and parts[1].startswith("tenant_id="):
        tenant = parts[1][len("tenant_id="):]
        day = _day(parts[2])
        if tenant and day is not None:
            return LakeDir(lake.EVENTS, rel, day, tenant)
    if parts[0] == lake.DEAD_LETTERS and len(parts) == 2:
        day = _day(parts[1])
        if day is not None:
            return LakeDir(lake.DEAD_LETTERS, rel, day)
    return None


def _day(name: str) -> int | None:
    text = name[len("date="):]
    if not name.startswith("date=") or len(text) != 10:
        return None
    try:
        return (date.fromisoformat(text) - date(1970, 1, 1)).days
    except ValueError:
        return None


def lake_dirs(store: LakeStore, under: str = "") -> dict[LakeDir, list[Entry]]:
    """Every leaf folder under `under` ("" = the whole lake) with its files, in name
    order: one walk (on S3 one paged listing per kind)."""
    kinds = [under] if under else [lake.EVENTS, lake.DEAD_LETTERS]
    found = {}
    for kind in kinds:
        for rel, entries in store.walk(kind).items():
            folder = lake_dir(rel)
            if folder is not None:
                found[folder] = entries
    return dict(sorted(found.items(), key=lambda item: item[0].rel))


def live(folder: LakeDir, entries: list[Entry]) -> list[str]:
    """Relative paths of the files of `folder` that readers should read."""
    return [folder.file(n) for n in lake.live_files([e.name for e in entries])]


def tenants(store: LakeStore) -> list[str]:
    """Every tenant with an event folder in the lake."""
    prefix = "tenant_id="
    return [name[len(prefix):] for name in store.subfolders(lake.EVENTS)
            if name.startswith(prefix) and len(name) > len(prefix)]


def live_event_files(store: LakeStore, tenant_id: str,
                     days: tuple[int, int] | None = None) -> list[str]:
    """Live event files of one tenant, in date folders days[0]..days[1] (all if None)."""
    return [rel for folder, entries in lake_dirs(store, lake.tenant_dir(tenant_id)).items()
            if days is None or days[0] <= folder.day <= days[1]
            for rel in live(folder, entries)]


@dataclass(frozen=True)
class SummaryFolder:
    """A tenant's `summaries/` folder as one walk found it (`rollups.summaries`)."""

    entries: dict[str, Entry]
    """Every file under it, by path relative to the lake root."""
    complete: list[int]
    """The generations holding a manifest, newest first."""
    latest: int
    """The highest generation number, complete or not (0: none)."""

    def manifest(self, store: LakeStore, tenant_id: str) -> tuple[int, bytes] | None:
        """The newest manifest still there: (its generation, its bytes)."""
        for generation in self.complete:
            try:
                return generation, store.get(
                    f"{lake.generation_dir(tenant_id, generation)}/{lake.MANIFEST}")
            except FileNotFoundError:  # deleted since the walk: an older one stays
                continue
        return None


def summary_folder(store: LakeStore, tenant_id: str) -> SummaryFolder:
    """One walk of the tenant's summaries (on S3 one paged listing)."""
    entries: dict[str, Entry] = {}
    complete, latest = [], 0
    for folder, found in store.walk(lake.summary_dir(tenant_id)).items():
        entries.update((f"{folder}/{e.name}", e) for e in found)
        generation = lake.parse_generation(folder.rpartition("/")[2])
        if generation is not None:
            latest = max(latest, generation)
            if any(e.name == lake.MANIFEST for e in found):
                complete.append(generation)
    return SummaryFolder(entries, sorted(complete, reverse=True), latest)
