"""How a lake answer is split: one total, per campaign, per local time bucket, per
weekday-hour cell of local time, or per JSON value of a metadata key, as DuckDB
expressions over an event's (or a summed row's) columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pulse.rollups import breakdown, zones


@dataclass(frozen=True)
class Group:
    """How an answer is split: one total, per campaign, per local time bucket, per
    weekday-hour cell of local time, or per JSON value of a metadata key."""

    kind: str
    buckets: zones.Buckets | None = None
    segments: tuple[zones.Segment, ...] = ()
    """The zone's offsets over the range, for cells."""
    metadata_key: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        if self.metadata_key is None:
            return {}
        return {"metadata_key": breakdown.json_pointer(self.metadata_key)}

    @property
    def by_hour(self) -> bool:
        """Every event of one UTC hour falls in one group: summed hourly rows can answer."""
        if self.kind == "metadata":
            return False
        if self.kind == "cell":
            return zones.hour_aligned(list(self.segments))
        return self.buckets is None or self.buckets.hour_aligned

    @property
    def columns(self) -> tuple[str, ...]:
        """What its SQL reads of an event besides `occurred_at` (select list items)."""
        if self.kind == "campaign":
            return ("campaign_id",)
        if self.kind == "metadata":
            return (breakdown.METADATA_VALUE_COLUMN,)
        return ()

    def sql(self, column: str) -> str:
        if self.kind == "total":
            return "NULL"
        if self.kind == "campaign":
            return "campaign_id"
        if self.kind == "metadata":
            return breakdown.METADATA_GROUP_SQL
        if self.kind == "cell":
            return zones.weekday_hour_sql(zones.local_sql(column, list(self.segments)))
        assert self.buckets is not None
        return self.buckets.sql(column)


TOTAL = Group("total")
BY_CAMPAIGN = Group("campaign")


def by_bucket(buckets: zones.Buckets) -> Group:
    return Group("bucket", buckets=buckets)


def by_metadata(key: str) -> Group:
    return Group("metadata", metadata_key=key)


def by_cell(segments: list[zones.Segment]) -> Group:
    """weekday * 24 + hour of local time (Monday = 0)."""
    return Group("cell", segments=tuple(segments))
