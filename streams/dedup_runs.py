"""Dedup runs as files under `PULSE_STATE_DIR`: the worker's `rollups.dedup.RunStore`.

A run is one file: a header (magic, day, count, crc32 of the entries), then its sorted
20-byte entries. Lookups read only the 2.5 KiB block a digest can be in, found through
a sparse index kept in memory (every 128th high half: 1/16 byte per event), with
`pread`, not a memory map: the pages a map touches would count as the worker's resident
memory, which is what this design keeps from growing with history.

The folder is a cache. Every run a checkpoint names is also in the lake's store, and a
run that is missing or fails its checksum here is fetched from there again. Beside the
runs, the dedup filter of each of the last two checkpoints this disk saw is kept
(`filter-<offset>-<session>.bin`, with a fingerprint of the runs it covers), so that a
restart copies it back instead of rebuilding it from every digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from pulse.rollups.dedup import ENTRY, U64, Bools, Run, find_sorted, run_crc

log = logging.getLogger("pulse.dedup")

MAGIC = b"PULSERUN"
_HEADER = struct.Struct("<8siQI")
INDEX_EVERY = 128
"""Entries per block of the sparse index."""
FILTER_MAGIC = b"PULSEFLT"
FILTERS_KEPT = 2
"""Saved filters kept: those of the two checkpoints written last (a reader falls back
to the one before the newest)."""
TMP_GRACE_SECONDS = 60.0
"""A temporary file this process is not writing is removed once it is this old: it was
left by a process killed while writing (a live write finishes in well under this)."""


class RunCorrupt(Exception):
    """A run file does not hold what its name and header promise."""


def encode_run(run: Run, entries: npt.NDArray[np.void]) -> bytes:
    return _HEADER.pack(MAGIC, run.day, run.count, run.crc) + entries.tobytes()


def runs_fingerprint(runs: Iterable[Run]) -> bytes:
    """What identifies a set of runs: their names (random, never reused), sizes and
    checksums, in any order. A saved filter is used only for the runs it was built over."""
    digest = hashlib.blake2b(digest_size=16)
    for run in sorted(runs, key=lambda r: r.name):
        digest.update(f"{run.name}:{run.day}:{run.count}:{run.crc};".encode())
    return digest.digest()


def decode_run(run: Run, data: bytes) -> npt.NDArray[np.void]:
    """The entries of a run's file bytes, checked against the run's header and checksum."""
    if len(data) < _HEADER.size:
        raise RunCorrupt(f"run {run.name}: truncated ({len(data)} bytes)")
    magic, day, count, crc = _HEADER.unpack_from(data)
    if (magic, day, count, crc) != (MAGIC, run.day, run.count, run.crc):
        raise RunCorrupt(f"run {run.name}: header does not match its checkpoint")
    body = memoryview(data)[_HEADER.size:]
    if len(body) != count * ENTRY.itemsize or zlib.crc32(body) != crc:
        raise RunCorrupt(f"run {run.name}: truncated or corrupt")
    return np.frombuffer(body, ENTRY)


class DiskRuns:
    """Runs of one keyed partition in a local folder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self._index: dict[str, U64] = {}
        self._fds: dict[str, int] = {}
        self._pinned: dict[str, int] = {}
        """Runs a checkpoint being published still has to upload: not deleted yet."""
        self._doomed: dict[str, Run] = {}
        self._writing: set[str] = set()
        """Temporary files being written now (from any thread): never swept."""

    def path(self, run: Run) -> str:
        return os.path.join(self.folder, f"{run.name}.run")

    # ---- RunStore ------------------------------------------------------------------

    def write(self, day: int, entries: npt.NDArray[np.void]) -> Run:
        entries = np.ascontiguousarray(entries)
        run = Run(day, f"{day}-{uuid.uuid4().hex[:16]}", len(entries), run_crc(entries))
        self._write_file(run, encode_run(run, entries))
        self._index[run.name] = np.ascontiguousarray(entries["hi"][::INDEX_EVERY])
        return run

    def read(self, run: Run) -> npt.NDArray[np.void]:
        return np.fromfile(self.path(run), ENTRY, offset=_HEADER.size, count=run.count)

    def find(self, run: Run, hi: U64, lo: U64) -> tuple[Bools, npt.NDArray[np.uint32]]:
        index = self._index[run.name]
        first = np.maximum(np.searchsorted(index, hi, "left") - 1, 0)
        last = np.maximum(np.searchsorted(index, hi, "right") - 1, 0)
        found = np.zeros(len(hi), bool)
        content = np.zeros(len(hi), np.uint32)
        for start in np.unique(first).tolist():
            which = np.flatnonzero(first == start)
            end = int(last[which].max()) + 1
            block = self._block(run, start * INDEX_EVERY, end * INDEX_EVERY)
            at = find_sorted(block["hi"], block["lo"], hi[which], lo[which])
            hit = at >= 0
            found[which[hit]] = True
            content[which[hit]] = block["content"][at[hit]]
        return found, content

    def delete(self, run: Run) -> None:
        if self._pinned.get(run.name):
            self._doomed[run.name] = run
            return
        self._index.pop(run.name, None)
        fd = self._fds.pop(run.name, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self.path(run))
        except FileNotFoundError:
            pass

    # ---- checkpoints ---------------------------------------------------------------

    def pinned(self) -> set[str]:
        return set(self._pinned)

    def pin(self, runs: list[Run]) -> None:
        for run in runs:
            self._pinned[run.name] = self._pinned.get(run.name, 0) + 1

    def unpin(self, runs: list[Run]) -> None:
        for run in runs:
            left = self._pinned[run.name] - 1
            if left:
                self._pinned[run.name] = left
                continue
            del self._pinned[run.name]
            doomed = self._doomed.pop(run.name, None)
            if doomed is not None:
                self.delete(doomed)

    def file_bytes(self, run: Run) -> bytes:
        with open(self.path(run), "rb") as fh:
            return fh.read()

    def adopt(self, run: Run, fetch: Callable[[Run], bytes]) -> bool:
        """Make `run` (named by a checkpoint) usable here: keep the local copy if it is
        whole, else take the lake's (`fetch`, then True); `RunCorrupt` if neither is.

        Every byte is checked against the run's checksum here, once: reading a run
        costs far less than the filter built over it (measured: 0.1 s for 5 M digests),
        and a run that passed is never trusted on its name alone."""
        try:
            with open(self.path(run), "rb") as fh:
                entries = decode_run(run, fh.read())
            fetched = False
        except (FileNotFoundError, RunCorrupt) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s; taking the lake's copy", exc)
            data = fetch(run)
            entries = decode_run(run, data)
            self._write_file(run, data)
            fetched = True
        self._index[run.name] = np.ascontiguousarray(entries["hi"][::INDEX_EVERY])
        return fetched

    def filter_path(self, offset: int, session: str) -> str:
        """Where the filter of the checkpoint `session` stamped at journal `offset` is
        saved: named as the checkpoint is, since a journal recreated under the same
        epoch (or a reset) reuses offsets but never sessions."""
        return os.path.join(self.folder, f"filter-{offset:012d}-{session[:12]}.bin")

    def save_filter(self, offset: int, session: str, runs: list[Run], data: bytes) -> None:
        """Keep the dedup filter of the checkpoint `session` stamped at journal `offset`,
        which covers exactly `runs`, and the one saved before it; sweep older ones and
        temporary files left by a killed process."""
        header = FILTER_MAGIC + runs_fingerprint(runs)
        self._write_raw(self.filter_path(offset, session), header + data)
        filters = []
        for name in os.listdir(self.folder):
            if name.startswith("filter-") and name.endswith(".bin"):
                try:
                    filters.append((os.stat(os.path.join(self.folder, name)).st_mtime_ns, name))
                except FileNotFoundError:
                    continue
        # By when they were written, not by offset: after the journal is recreated the
        # new filters have the lower offsets and are the ones to keep.
        for _, name in sorted(filters, reverse=True)[FILTERS_KEPT:]:
            self._unlink(name)
        self.sweep_temporary()

    def load_filter(self, offset: int, session: str, runs: list[Run]) -> bytes | None:
        """The filter saved with that checkpoint, if this disk has it and it was built
        over exactly `runs` (anything else could miss digests: duplicates counted)."""
        try:
            with open(self.filter_path(offset, session), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        header = FILTER_MAGIC + runs_fingerprint(runs)
        if not data.startswith(header):
            log.warning("%s was saved over other dedup runs; rebuilding the filter from the "
                        "runs", self.filter_path(offset, session))
            return None
        return data[len(header):]

    def forget_others(self, keep: set[str]) -> None:
        """Delete local run files no state uses (left by an earlier process), and
        temporary files no write of this process is using that are old enough."""
        for name in os.listdir(self.folder):
            stem, ext = os.path.splitext(name)
            if ext == ".run" and stem not in keep:
                self._unlink(name)
        self.sweep_temporary()

    def sweep_temporary(self, grace: float = TMP_GRACE_SECONDS) -> None:
        """Remove temporary files left by a killed writer: not being written by this
        process, and unchanged for `grace` seconds."""
        now = time.time()
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if not name.endswith(".tmp") or path in self._writing:
                continue
            try:
                if now - os.stat(path).st_mtime > grace:
                    os.unlink(path)
            except FileNotFoundError:
                continue

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.folder, name))
        except FileNotFoundError:
            pass

    def _write_file(self, run: Run, data: bytes) -> None:
        self._write_raw(self.path(run), data)

    def _write_raw(self, path: str, data: bytes) -> None:
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        self._writing.add(tmp)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            self._unlink(os.path.basename(tmp))
            raise
        finally:
            self._writing.discard(tmp)

    def _block(self, run: Run, start: int, end: int) -> npt.NDArray[np.void]:
        fd = self._fds.get(run.name)
        if fd is None:
            fd = self._fds[run.name] = os.open(self.path(run), os.O_RDONLY)
        end = min(end, run.count)
        data = os.pread(fd, (end - start) * ENTRY.itemsize, _HEADER.size + start * ENTRY.itemsize)
        return np.frombuffer(data, ENTRY)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
