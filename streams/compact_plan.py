"""What `pulse compact` may merge, worked out from a folder's listing alone (pure).

A file may be merged once it is final (`Finality`: old enough, and below the ingest
group's committed offsets if it is of the current epoch); a merge is a run of final
files of one epoch and input partition whose ranges neither overlap nor leave room for
another live file of theirs (`plan_merges`), so the merged file never hides a row it
does not hold. `streams.compact` lists the folders and does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pulse.lakefs import LakeDir
from pulse.schemas import lake


@dataclass(frozen=True)
class Source:
    """A lake file as listed: its parsed name, size and modification time."""

    file: lake.LakeFile
    size: int
    mtime: float

    @property
    def name(self) -> str:
        return self.file.name


@dataclass(frozen=True)
class Finality:
    """When a file is final (can no longer change), for this run."""

    now: float
    min_age: float
    current_epoch: str | None
    committed: dict[int, int] | None  # None: Kafka not asked; current epoch goes by age
    current_min_age: float

    def final(self, source: Source) -> bool:
        if source.file.compacted:
            return True
        age = self.now - source.mtime
        if age < self.min_age:
            return False
        if self.committed is not None:  # Kafka answered: the current epoch is known
            if source.file.epoch != self.current_epoch:
                return True
            committed = self.committed.get(source.file.partition)
            return committed is not None and source.file.last < committed
        if self.current_epoch is None or source.file.epoch == self.current_epoch:
            return age >= self.current_min_age
        return True

    def describe(self) -> str:
        if self.committed is not None:
            return (f"merging files older than {self.min_age:g} s; of the current epoch "
                    f"{self.current_epoch} only offsets the ingest group has committed")
        newest = (f"epoch {self.current_epoch} (the newest, maybe still written)"
                  if self.current_epoch else "every epoch")
        return (f"merging files of earlier epochs older than {self.min_age:g} s, and of "
                f"{newest} only files older than {self.current_min_age:g} s")


@dataclass(frozen=True)
class Merge:
    """Sources (a run of one epoch and partition) that become one compacted file."""

    sources: tuple[Source, ...]

    @property
    def target(self) -> lake.LakeFile:
        first, last = self.sources[0].file, self.sources[-1].file
        return lake.LakeFile(first.epoch, first.partition, first.first, last.last,
                             compacted=True)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.sources)


@dataclass
class FolderPlan:
    """What one folder needs: merges, superseded files and stale temp files to delete."""

    folder: LakeDir
    files: int = 0
    size: int = 0
    merges: list[Merge] = field(default_factory=list)
    superseded: list[Source] = field(default_factory=list)
    live: list[Source] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)


def plan_merges(live: list[Source], final: Callable[[Source], bool]) -> list[Merge]:
    """Runs of 2+ final files per (epoch, partition) that one compacted file may replace.

    `live` must hold every live file of the folder: a file that is not final, or whose
    range overlaps the one before, ends the run, so no merged range can cover a live
    file outside its run.
    """
    groups: dict[tuple[str, int], list[Source]] = {}
    for source in live:
        groups.setdefault((source.file.epoch, source.file.partition), []).append(source)
    merges = []
    for group in groups.values():
        run: list[Source] = []
        for source in sorted(group, key=lambda s: (s.file.first, s.file.last)):
            if not final(source) or (run and source.file.first <= run[-1].file.last):
                if len(run) > 1:
                    merges.append(Merge(tuple(run)))
                run = [source] if final(source) else []
            else:
                run.append(source)
        if len(run) > 1:
            merges.append(Merge(tuple(run)))
    return merges


def plan_folder(folder: LakeDir, listing: list[tuple[str, int, float]], finality: Finality,
                temp_min_age: float) -> FolderPlan:
    """The plan for one folder, from its (name, size, mtime) listing."""
    plan = FolderPlan(folder)
    sources = []
    for name, size, mtime in listing:
        parsed = lake.parse_name(name)
        if parsed is not None:
            sources.append(Source(parsed, size, mtime))
            plan.files += 1
            plan.size += size
        elif name.startswith(".") and name.endswith(".tmp") and (
                finality.now - mtime >= temp_min_age):
            plan.temps.append(name)
    live = set(lake.live_files([s.name for s in sources]))
    plan.superseded = [s for s in sources if s.name not in live]
    plan.live = [s for s in sources if s.name in live]
    plan.merges = plan_merges(plan.live, finality.final)
    return plan
