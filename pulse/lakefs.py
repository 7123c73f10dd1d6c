"""The lake's store: the one seam through which every reader and writer reaches files.

`PULSE_LAKE` is a local folder or `s3://bucket/prefix`; everything above this module
(the lake sink, compaction, replay, `pulse sql`, the API's lake queries, rebuilds,
checkpoints) names files by their path relative to the lake root (`events/...`,
`_pulse/...`) and never asks which kind of store it is. A file appears whole or not at
all: written to a temporary name and renamed on a folder, one PUT on object storage.

A leaf like `pulse.settings`: it imports nothing else of Pulse.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass


class LakeStoreError(Exception):
    """The lake's store cannot be used as configured; the message names what to fix."""


@dataclass(frozen=True)
class Entry:
    """One file directly inside a folder of the lake."""

    name: str
    size: int
    mtime: float
    """Seconds since the epoch of its last write."""


class LakeStore:
    """Files under one lake root (a local folder in this implementation)."""

    def __init__(self, root: str) -> None:
        if "://" in root:
            raise LakeStoreError(
                f"the lake {root!r} is a URL; point PULSE_LAKE (or --lake) at a local folder")
        self.root = root

    def uri(self, rel: str) -> str:
        """Where `rel` is, for messages."""
        return os.path.join(os.path.abspath(self.root), rel)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def put(self, rel: str, data: bytes) -> None:
        """Write `rel` whole: readers see the old file or the new one, never a part."""
        path = self._path(rel)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
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

    def delete(self, rel: str) -> None:
        """Remove `rel`; a file already gone is not an error."""
        try:
            os.unlink(self._path(rel))
        except FileNotFoundError:
            pass

    def now(self) -> float:
        """The store's clock, to compare with `Entry.mtime`."""
        return time.time()
