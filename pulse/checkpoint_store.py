"""The checkpoints in the lake's store, as every reader finds them: workers and API
processes alike (the writing side is `streams.checkpoints`).

A checkpoint is a file of `rollups.checkpoint`'s format under
`_pulse/checkpoints/<epoch>/p<partition>/` in the lake; this module lists them newest
first and decodes them, skipping (and logging, with the reason) any that is truncated,
corrupt, newer or written under other definitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pulse.lakefs import LakeStore
from pulse.rollups import checkpoint
from pulse.rollups.checkpoint import Body, Definitions, Unusable
from pulse.rollups.dedup import Run
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.partition import RollupSpec
from pulse.settings import Settings

log = logging.getLogger("pulse.checkpoints")


def rollup_spec(settings: Settings) -> RollupSpec:
    """The definitions the rollups, and so their checkpoints, are built with: a worker
    and an API process with other settings refuse each other's checkpoints."""
    return RollupSpec(FunnelSpec(settings.funnel_steps), settings.engaged_seconds,
                      settings.retention_days * 24, settings.partitions)


class CheckpointReader:
    """The published checkpoints of one keyed partition of one epoch."""

    def __init__(self, lake: LakeStore, epoch: str, partition: int,
                 definitions: Definitions) -> None:
        self.lake = lake
        self.partition = partition
        self.definitions = definitions
        self.dir = checkpoint.partition_dir(epoch, partition)
        self.runs_dir = checkpoint.runs_dir(epoch, partition)

    def bodies(self) -> Iterator[Body]:
        """Every checkpoint that decodes and fits these definitions, newest first; the
        others are logged with the reason and skipped."""
        names = [entry.name for entry in self.lake.list(self.dir)]
        for _, name in checkpoint.newest_first(names):
            try:
                yield self.read(name)
            except Unusable as exc:
                log.warning("keyed partition %d: checkpoint %s skipped: %s", self.partition,
                            self.lake.uri(f"{self.dir}/{name}"), exc)

    def read(self, name: str) -> Body:
        try:
            data = self.lake.get(f"{self.dir}/{name}")
        except FileNotFoundError:
            raise Unusable("it is gone (collected as garbage meanwhile)") from None
        return checkpoint.decode(data, self.definitions, self.partition)

    def at(self, offset: int, session: str) -> Body | None:
        """The checkpoint `session` stamped with journal offset `offset` (a reset's), if it
        has been published. Both must match: a journal recreated under the same epoch
        reuses offsets, and an older checkpoint may carry the same one."""
        name = checkpoint.file_name(offset, session)
        if name not in {e.name for e in self.lake.list(self.dir)}:
            return None
        body = self.read(name)
        return body if body.session == session else None

    def fetch_run(self, run: Run) -> bytes:
        return self.lake.get(f"{self.runs_dir}/{run.name}.run")

