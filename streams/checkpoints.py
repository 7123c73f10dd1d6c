"""A keyed partition's checkpoints in the lake's store: publish, find, collect garbage.

    <lake>/_pulse/checkpoints/<epoch>/p<partition>/<offset>-<session>.ckpt
    <lake>/_pulse/checkpoints/<epoch>/p<partition>/runs/<run>.run

Publishing is two steps, in this order, each whole or not at all (`pulse.lakefs`):

1. upload every dedup run the body names that the store does not hold yet (runs are
   immutable and shared by later checkpoints, so each is uploaded once);
2. write the body. A body that exists names only runs that exist: writing it is the
   publication, and a worker killed anywhere leaves at most unreferenced runs, which
   garbage collection removes.

A writer publishes only states it has proved are the journal's: every record from its
claim to the checkpoint's offset was its own (it checks that the offsets of its writes
follow one another, `streams.owners`), so a stalled ex-owner's state never becomes a
checkpoint. Old checkpoints go once two newer ones are published (newer by when they
were published: a journal recreated under the same epoch starts its offsets again, and
its checkpoints must not be the ones collected); runs that no kept checkpoint names, and
temporary files a writer killed halfway left, go after a grace period, so nothing still
being uploaded is ever taken.
"""

from __future__ import annotations

import logging

from pulse.checkpoint_store import CheckpointReader
from pulse.lakefs import LakeStore
from pulse.rollups import checkpoint
from pulse.rollups.checkpoint import Body, Definitions, Unusable

from .dedup_runs import DiskRuns

log = logging.getLogger("pulse.checkpoints")

KEEP = 2
"""Checkpoints kept per partition: the newest, and one to fall back to."""
GARBAGE_GRACE_SECONDS = 600.0


class PartitionCheckpoints(CheckpointReader):
    """The checkpoints of one keyed partition of one epoch, as their writer sees them."""

    def __init__(self, lake: LakeStore, epoch: str, partition: int,
                 definitions: Definitions) -> None:
        super().__init__(lake, epoch, partition, definitions)
        self._uploaded: set[str] | None = None

    # ---- writing -------------------------------------------------------------------

    def publish(self, body: Body, data: bytes, runs: DiskRuns) -> str:
        """Upload the runs `body` names that are missing, then the body (encoded as
        `data`); returns the checkpoint's name. Blocking: run it off the event loop."""
        if self._uploaded is None:
            self._uploaded = {e.name[:-4] for e in self.lake.list(self.runs_dir)
                              if e.name.endswith(".run")}
        for ref in body.runs:
            if ref.name not in self._uploaded:
                self.lake.put(f"{self.runs_dir}/{ref.name}.run", runs.file_bytes(ref.run()))
                self._uploaded.add(ref.name)
        name = checkpoint.file_name(body.offset, body.session)
        self.lake.put(f"{self.dir}/{name}", data)
        return name

    def collect_garbage(self, keep: int = KEEP) -> None:
        """Remove checkpoints older than the `keep` published last, runs none of those
        names, and temporary files left by a writer killed halfway."""
        entries = self.lake.list(self.dir)
        now = self.lake.now()
        for entry in entries:
            if _orphaned_temporary(entry.name, now - entry.mtime):
                self.lake.delete(f"{self.dir}/{entry.name}")
        published = sorted(((e.mtime, offset, e.name) for e in entries
                            if (offset := checkpoint.offset_of(e.name)) is not None),
                           reverse=True)
        kept: list[Body] = []
        for _, _, name in published:
            if len(kept) >= keep:
                self.lake.delete(f"{self.dir}/{name}")
                continue
            try:
                kept.append(self.read(name))
            except Unusable:
                continue  # unreadable: it names nothing; it goes when it is old enough
        named = {ref.name for body in kept for ref in body.runs}
        for entry in self.lake.list(self.runs_dir):
            stem = entry.name[:-4]
            if not entry.name.endswith(".run"):
                if _orphaned_temporary(entry.name, now - entry.mtime):
                    self.lake.delete(f"{self.runs_dir}/{entry.name}")
            elif len(kept) >= keep and stem not in named and \
                    now - entry.mtime > GARBAGE_GRACE_SECONDS:
                self.lake.delete(f"{self.runs_dir}/{entry.name}")
                if self._uploaded is not None:
                    self._uploaded.discard(stem)


def _orphaned_temporary(name: str, age: float) -> bool:
    """A file `LakeStore.put` was writing (`.<name>.<random>.tmp`) when its writer was
    killed: old enough that no live upload can still be behind it."""
    return name.startswith(".") and name.endswith(".tmp") and age > GARBAGE_GRACE_SECONDS
