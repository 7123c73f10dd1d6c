"""Snapshots of the lake that a paged list keeps to (`/analytics/funnel/customers`):
which files, and which rows of them, its first page read."""

from __future__ import annotations

import os
from typing import Any

from pulse.schemas import lake

from .cursor import Snapshot
from .errors import ApiError, ErrorCode


def snapshot(files: list[str]) -> Snapshot:
    """The highest input offset `files` cover, per epoch and partition: what a list read
    from them holds, for its later pages to keep to (`snapshot_files`,
    `snapshot_filter`).

    Within an epoch an input partition's flushes are written one after another, each
    starting past the last, so a row that lands later has a higher offset (or is a
    rewrite of the same row). After a broker restart offsets start again at 0 under a
    new epoch (`pulse.epoch`): an offset means something only with its epoch.
    """
    out: Snapshot = {}
    for rel in files:
        name = lake.parse_name(os.path.basename(rel))
        if name is not None:
            limits = out.setdefault(name.epoch, {})
            limits[name.partition] = max(name.last, limits.get(name.partition, -1))
    return {epoch: dict(sorted(limits.items())) for epoch, limits in sorted(out.items())}


def snapshot_files(snapshot: Snapshot, files: list[str]) -> list[str]:
    """Those of `files` that hold rows of `snapshot`: of an epoch and partition it names,
    starting at or before its offset there (files of a new epoch, after a broker
    restart, hold none, whatever their offsets).

    Rows carry no epoch, so the rows a kept file holds past the snapshot (a compaction or
    a redone flush that spans its offset) are cut by offset alone (`snapshot_filter`,
    the highest offset of any epoch of the partition). When another epoch of the same
    partition reaches higher, that cut cannot be made: the list is refused, to be asked
    for again from its first page.
    """
    ceiling = ceilings(snapshot)
    kept = []
    for rel in files:
        name = lake.parse_name(os.path.basename(rel))
        last = None if name is None else snapshot.get(name.epoch, {}).get(name.partition)
        if name is None or last is None or name.first > last:
            continue
        if name.last > last and ceiling[name.partition] > last:
            raise ApiError(400, ErrorCode.BAD_CURSOR, RENUMBERED)
        kept.append(rel)
    return kept


def ceilings(snapshot: Snapshot) -> dict[int, int]:
    """Per partition, the highest offset of any epoch in `snapshot`."""
    out: dict[int, int] = {}
    for limits in snapshot.values():
        for partition, last in limits.items():
            out[partition] = max(last, out.get(partition, -1))
    return out


RENUMBERED = ("`cursor`: since its first page the lake was renumbered (the broker restarted) "
              "and rewritten across the cursor's position; ask for the first page again "
              "without it")


def snapshot_filter(snapshot: Snapshot, params: dict[str, Any]) -> str:
    """Rows of `snapshot` among those of the files `snapshot_files` keeps: offsets up to
    the highest of any epoch, per partition."""
    cases = []
    for i, (partition, offset) in enumerate(sorted(ceilings(snapshot).items())):
        params[f"sp{i}"], params[f"so{i}"] = partition, offset
        cases.append(f"WHEN $sp{i} THEN $so{i}")
    if not cases:
        return "FALSE"
    return f"kafka_offset <= CASE kafka_partition {' '.join(cases)} ELSE -1 END"
