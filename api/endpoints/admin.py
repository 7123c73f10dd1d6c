"""Who am I, which tenants exist, and how the pipeline is doing (admins only)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups.store import PartitionInfo
from pulse.rollups.windows import HOUR_US

from ..auth import require_admin
from ..context import Context, context
from ..params import iso
from ..query import partition_as_of
from .reports import json_response


async def me(request: Request) -> Response:
    scope = context(request).keys.scope(request)
    return json_response({"role": "admin" if scope.admin else "tenant",
                          "tenant_id": scope.tenant_id})


async def tenants(request: Request) -> Response:
    ctx = context(request)
    require_admin(ctx.keys.scope(request))
    known = set(ctx.store.tenants()) | set(ctx.lake.tenants())
    return json_response({"tenants": sorted(known)})


def _recovery(info: PartitionInfo, unavailable: str | None,
              loaded_at_start: int | None) -> dict[str, object]:
    """What the partition's worker says of its recovery, checkpoints and dedup memory."""
    stats = info.stats
    written = stats.get("checkpoint_written_us")
    return {
        "checkpoint_offset": stats.get("checkpoint_offset"),
        "checkpoint_age_seconds": None if written is None
        else round(time.time() - written / 1e6, 1),
        "journal_records_folded_at_start": stats.get("folded_at_start"),
        "recovery_seconds": stats.get("recovery_seconds"),
        "dedup_events": stats.get("dedup_events"),
        "dedup_bytes_in_memory": stats.get("dedup_memory_bytes"),
        "dedup_bytes_on_disk": stats.get("dedup_disk_bytes"),
        "replica_started_from_checkpoint": loaded_at_start,
        "rebuild_needed": unavailable,
    }


async def status(request: Request) -> Response:
    """Counters, watermarks and lake progress as the journal tells them."""
    ctx = context(request)
    require_admin(ctx.keys.scope(request))
    totals, partitions, as_of = _partitions(ctx)
    lake_marks = ctx.store.lake_marks()
    replica = ctx.replica
    return json_response({
        "ready": replica.ready,
        "replica": {
            "ready": replica.ready,
            "journal_records": replica.records,
            "seconds_since_last_record": None if replica.last_record_at is None
            else round(time.time() - replica.last_record_at, 3),
            "problem": replica.problem,
        },
        "totals": totals,
        "accounting_holds": totals["read"]
        == totals["accepted"] + totals["duplicates"] + totals["dead_letters"],
        "partitions": partitions,
        "lake": {
            "root": ctx.settings.lake,
            "last_flush": {  # "at" is None for a partition idle since it was assigned
                str(p): {"at": iso(m.flushed_at_us) if m.flushed_at_us else None,
                         "complete_to": iso(m.as_of_us),
                         "write_failures": m.failures, "error": m.error}
                for p, m in sorted(lake_marks.items())
            },
            "writes_failing": sorted(str(p) for p, m in lake_marks.items() if m.error),
            "read_errors": ctx.metrics.lake_read_errors,
            "iceberg": {  # a failing catalog delays these commits only, never the lake
                "files_waiting": sum(m.iceberg_waiting for m in lake_marks.values()),
                "commits_failing": sorted(str(p) for p, m in lake_marks.items()
                                          if m.iceberg_error),
                "errors": sorted({m.iceberg_error for m in lake_marks.values()
                                  if m.iceberg_error}),
            },
        },
        "lag": {
            "rollups_behind_seconds": None if not as_of
            else round(max(0.0, time.time() - min(as_of) / 1e6), 3),
            "consumer": {group: {str(p): offsets for p, offsets in sorted(partitions.items())}
                         for group, partitions in sorted(ctx.lag.lag.items())},
            "consumer_read_at": None if ctx.lag.read_at is None
            else iso(int(ctx.lag.read_at * 1e6)),
        },
        "as_of": iso(min(as_of)) if as_of else None,
    })


def _partitions(ctx: Context) -> tuple[dict[str, int], dict[str, dict[str, object]], list[int]]:
    """Journal totals, each journal partition's progress, and the times they are complete to."""
    totals: dict[str, int] = {}
    partitions: dict[str, dict[str, object]] = {}
    as_of: list[int] = []
    for q, info in sorted(ctx.store.partitions.items()):
        for key, value in info.counters.items():
            totals[key] = totals.get(key, 0) + value
        complete = partition_as_of(info, ctx.settings.partitions)
        partitions[str(q)] = {
            "journal_records": info.records,
            "watermark": None if info.watermark_us is None else iso(info.watermark_us),
            "retained_from": None if info.horizon_hour is None
            else iso(info.horizon_hour * HOUR_US),
            "as_of": None if complete is None else iso(complete),
            "counters": dict(info.counters),
            **_recovery(info, ctx.replica.unavailable.get(q),
                        ctx.replica.loaded_at_start.get(q)),
        }
        if complete is not None:
            as_of.append(complete)
    for key in ("read", "accepted", "duplicates", "conflicting_duplicates", "dead_letters",
                "beyond_retention"):
        totals.setdefault(key, 0)
    return totals, partitions, as_of
