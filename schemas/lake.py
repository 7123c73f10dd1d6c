"""Names in the Parquet lake (contract section 5), shared by its writers and readers.

    <lake>/events/tenant_id=<tenant>/date=<YYYY-MM-DD>/<epoch>-p<partition>-<first>-<last>[-c].parquet
    <lake>/dead_letters/date=<YYYY-MM-DD>/<epoch>-p<partition>-<first>-<last>.parquet

`first`..`last` is the range of input offsets the writing flush covered, so replaying
those offsets rewrites the same names. `pulse compact` merges the files of one epoch
and partition in a folder into one `-c` file whose range covers theirs; a file whose
range lies inside another's of the same epoch and partition is superseded, and readers
skip it, so a merge and the deletes after it are never counted twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

EVENTS = "events"
DEAD_LETTERS = "dead_letters"
_EPOCH_DAY = date(1970, 1, 1)
_NAME = re.compile(r"^([0-9a-f]{1,32})-p(\d{4,})-(\d{12,})-(\d{12,})(-c)?\.parquet$")


@dataclass(frozen=True, order=True)
class LakeFile:
    """A lake file name, parsed."""

    epoch: str
    partition: int
    first: int
    last: int
    compacted: bool = False

    @property
    def name(self) -> str:
        suffix = "-c" if self.compacted else ""
        return (f"{self.epoch}-p{self.partition:04d}-{self.first:012d}-{self.last:012d}"
                f"{suffix}.parquet")

    def covers(self, other: LakeFile) -> bool:
        """True when `other`'s rows are all in this file too (so `other` is superseded)."""
        if (self.epoch, self.partition) != (other.epoch, other.partition):
            return False
        if (self.first, self.last) == (other.first, other.last):
            return self.compacted and not other.compacted
        return self.first <= other.first and other.last <= self.last


def parse_name(name: str) -> LakeFile | None:
    match = _NAME.match(name)
    if match is None:
        return None
    epoch, partition, first, last, compacted = match.groups()
    return LakeFile(epoch, int(partition), int(first), int(last), compacted is not None)


def live_files(names: list[str]) -> list[str]:
    """The names in one folder that readers should read: Pulse files not superseded."""
    files = [f for f in (parse_name(n) for n in names) if f is not None]
    by_source: dict[tuple[str, int], list[LakeFile]] = {}
    for f in files:
        by_source.setdefault((f.epoch, f.partition), []).append(f)
    live = []
    for group in by_source.values():
        for f in group:
            if not any(other.covers(f) for other in group):
                live.append(f.name)
    return sorted(live)


def day_to_date(day: int) -> str:
    return (_EPOCH_DAY + timedelta(days=day)).isoformat()


def date_to_day(text: str) -> int:
    return (date.fromisoformat(text) - _EPOCH_DAY).days


def tenant_dir(tenant_id: str) -> str:
    return f"{EVENTS}/tenant_id={tenant_id}"


def event_dir(tenant_id: str, day: int) -> str:
    return f"{EVENTS}/tenant_id={tenant_id}/date={day_to_date(day)}"


def dead_letter_dir(day: int) -> str:
    return f"{DEAD_LETTERS}/date={day_to_date(day)}"


def us_to_datetime(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


# ---- walking a local lake -------------------------------------------------------------
# Every reader and writer (the API, `pulse sql`, `pulse compact`, rebuilds) walks the lake
# with these, so all of them agree on which folders exist and which files are live.


class LakeNotLocal(ValueError):
    """The lake is a URL; these tools walk a local folder."""


@dataclass(frozen=True)
class Folder:
    """One leaf folder of the lake: `events/tenant_id=.../date=...` or `dead_letters/date=...`."""

    kind: str
    rel: str
    path: str


def check_local(root: str) -> None:
    if "://" in root:
        raise LakeNotLocal(
            f"the lake {root!r} is a URL; point PULSE_LAKE (or --lake) at a local folder "
            "(mount the bucket, or copy the lake, to use it here)")


def folders(root: str) -> list[Folder]:
    """Every event and dead-letter folder under `root`, in name order ([] if none)."""
    check_local(root)
    out = []
    events = os.path.join(root, EVENTS)
    for tenant in _subdirs(events, "tenant_id="):
        for day in _date_dirs(os.path.join(events, tenant)):
            out.append(_folder(root, EVENTS, tenant, day))
    for day in _date_dirs(os.path.join(root, DEAD_LETTERS)):
        out.append(_folder(root, DEAD_LETTERS, day))
    return out


def tenants(root: str) -> list[str]:
    """Every tenant with an event folder in the lake."""
    prefix = "tenant_id="
    return [name[len(prefix):] for name in _subdirs(os.path.join(root, EVENTS), prefix)]


def tenant_folders(root: str, tenant_id: str) -> list[tuple[int, Folder]]:
    """(day, folder) of one tenant's date folders, oldest first."""
    tenant = f"tenant_id={tenant_id}"
    return [(date_to_day(day[len("date="):]), _folder(root, EVENTS, tenant, day))
            for day in _date_dirs(os.path.join(root, EVENTS, tenant))]


def live_paths(folder: Folder) -> list[str]:
    """Paths of the files of `folder` that readers should read (superseded ones left out)."""
    try:
        names = os.listdir(folder.path)
    except FileNotFoundError:
        return []
    return [os.path.join(folder.path, name) for name in live_files(names)]


def _folder(root: str, kind: str, *parts: str) -> Folder:
    rel = "/".join((kind, *parts))
    return Folder(kind, rel, os.path.join(root, kind, *parts))


def _subdirs(path: str, prefix: str) -> list[str]:
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [n for n in names if n.startswith(prefix) and len(n) > len(prefix)
            and os.path.isdir(os.path.join(path, n))]


def _date_dirs(path: str) -> list[str]:
    """`date=YYYY-MM-DD` folders; anything else would break the `date` column's type."""
    out = []
    for name in _subdirs(path, "date="):
        text = name[len("date="):]
        try:
            if len(text) == 10:
                date.fromisoformat(text)
                out.append(name)
        except ValueError:
            continue
    return out
