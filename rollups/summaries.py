"""Summaries of a tenant's lake, what `pulse compact` writes and the API reads.

A long range answered from raw events reads every event in it, and a funnel reads all
of a tenant's funnel steps. So `pulse compact` (`streams.summaries`) keeps, per tenant:

- per UTC day, a *keys* file: a 64-bit hash of every event id of that day, and each
  funnel-step id's distinct (campaign, customer, label, time) with its first copy's
  (partition, offset);
- per generation, the day's deduplicated measures summed per hour and campaign
  (`metrics.summary_rows_sql`), every journey's step times (`reach.step_times_sql`) and
  the funnel-step copies of the ids whose copies disagree (*conflicts*), with a
  `Manifest` written last: which live event files each day was computed from.

The API answers from them exactly as it would from the raw events (`api.summaries`):

- A day counts as summarized only while its live event files are the very ones the
  manifest names (a late event, a replay or a merge since makes it raw again).
- The raw path deduplicates the copies its filter keeps (time range, campaign, event
  type). Summed rows were deduplicated per day without a filter, so a day is *clean*,
  and its rows used, only if no id of it has copies at different times, or of
  different campaigns or event types (`metrics.SPREAD_SQL`), nor in another day
  (`crossing`): then a filter keeps all copies of an id or none, and either way counts
  the same one, the day's first.
- Files written after the generation (`fresh`) are read raw. An id of theirs may have
  a copy in a summarized day: that day (for measures) or the whole funnel is then
  answered raw. The keys files say which ids each day holds.
- Journeys merge: a journey's earliest time per step, and its list of times, are the
  same whether taken at once or from parts, so the stored step times of every journey
  and those of fresh events combine (`reach.merge_step_times_sql`). An id whose
  funnel-step copies differ cannot be merged that way (the raw path counts one copy,
  the one first by partition and offset among those its filter keeps), so those copies
  are kept whole as conflicts and deduplicated at query time, like fresh events.

Pure: the format, the SQL and the planning; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from . import metrics, reach
from .windows import DAY_US, HOUR_US

FORMAT = 1
"""Bumped whenever what a summary holds changes: older ones are then not used."""
MEASURES_FILE, JOURNEYS_FILE, CONFLICTS_FILE = (
    "measures.parquet", "journeys.parquet", "conflicts.parquet")
"""A generation's files, beside its manifest (`schemas.lake.generation_dir`)."""


class SummaryDay(msgspec.Struct, frozen=True):
    """One day of a generation."""

    day: int
    """Days since 1970-01-01 (UTC)."""
    files: tuple[str, ...]
    """The names of the day's live event files it was computed from, sorted."""
    digest: str
    """Names its keys file (`schemas.lake.summary_day_file`)."""
    spread: bool
    """Some id of the day has copies at different times, or of different campaigns or
    event types (`metrics.SPREAD_SQL`)."""
    crossing: bool
    """Some id of the day has a copy in another day too."""

    @property
    def clean(self) -> bool:
        """Its summed rows may answer whole hours (see the module doc)."""
        return not self.spread and not self.crossing


class Manifest(msgspec.Struct, frozen=True):
    """What a generation holds; written last, so a generation with one is complete."""

    format: int
    generation: int
    engaged_seconds: float
    steps: tuple[str, ...]
    days: tuple[SummaryDay, ...]

    def fits(self, engaged_seconds: float, steps: tuple[str, ...]) -> bool:
        """Computed under these settings (the measures for `engaged_seconds`, the
        journeys for `steps`), in this format."""
        return (self.format == FORMAT and self.engaged_seconds == engaged_seconds
                and self.steps == steps)


def encode(manifest: Manifest) -> bytes:
    return msgspec.json.encode(manifest)


def decode(data: bytes) -> Manifest | None:
    """The manifest in `data`, None if it is not one of this format."""
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError:
        return None
    return manifest if manifest.format == FORMAT else None


def digest(files: Iterable[str], engaged_seconds: float, steps: tuple[str, ...]) -> str:
    """The name of a day's keys, from everything they and its summed rows depend on."""
    text = "\n".join([str(FORMAT), repr(engaged_seconds), ",".join(steps), *sorted(files)])
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:24]


# ---- SQL --------------------------------------------------------------------------------

ID_HASH_SQL = "md5_number_upper(id)"
"""An event id's 64-bit hash: the first 8 bytes of the MD5 of its UTF-8, little-endian
(`id_hash`). Two ids sharing one only make an answer take the raw path."""


def id_hash(event_id: str) -> int:
    """`ID_HASH_SQL` in Python."""
    digest_ = hashlib.md5(event_id.encode(errors="surrogatepass"), usedforsecurity=False)
    return int.from_bytes(digest_.digest()[:8], "little")


DAY_ROWS_SQL = metrics.first_copies_sql("day_rows", key="id")
"""One day's events (relation `day_rows`, every copy), deduplicated."""

KEYS_SQL = f"""
WITH steps AS (
    SELECT id, {ID_HASH_SQL} AS idh, campaign_id, customer_id, label, occurred_at,
           min({{'p': kafka_partition, 'o': kafka_offset}}) AS first
    FROM day_rows WHERE event_type = 'funnel_step'
    GROUP BY id, campaign_id, customer_id, label, occurred_at
)
SELECT idh, TRUE AS funnel, id, first.p AS kafka_partition, first.o AS kafka_offset,
       campaign_id, customer_id, label, occurred_at,
       count(*) OVER (PARTITION BY id) AS variants
FROM steps
UNION ALL
SELECT DISTINCT {ID_HASH_SQL}, FALSE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM day_rows WHERE id NOT IN (SELECT id FROM steps)"""
"""One day's keys from relation `day_rows` (every copy): each funnel-step id's distinct
(campaign, customer, label, time) variants, with the first copy of each by partition
and offset, and how many variants it has; one row for every other id."""

CROSSING_SQL = ("SELECT DISTINCT day FROM keys "
                "QUALIFY count(DISTINCT day) OVER (PARTITION BY idh) > 1")
"""The days of relation `keys` (every day's keys, with `day`) sharing an id hash with
another day."""

CONFLICTED_SQL = """
SELECT *, variants > 1 OR count(DISTINCT day) OVER (PARTITION BY id) > 1 AS conflicted
FROM keys WHERE funnel"""
"""Every funnel-step variant of relation `keys`, marked `conflicted` when its id has
another variant, in its day or another."""


def journeys_sql(steps: tuple[str, ...]) -> str:
    """The stored step times of every journey, from the variants of relation `points`
    that are not conflicted (one per id, so no deduplication is needed)."""
    source = ("(SELECT campaign_id, customer_id, 'funnel_step' AS event_type, label, "
              "occurred_at FROM points WHERE NOT conflicted)")
    return reach.step_times_sql(steps, lists=True, source=source) + \
        "\nORDER BY campaign_id NULLS FIRST, t1"


JOURNEY_HASH_SQL = "hash(campaign_id, customer_id)"
"""A journey's key as one integer, to find the few stored journeys that newer events
touch without comparing strings (DuckDB's own hash: both sides are hashed by the same
process; equal hashes are then checked key by key)."""

CONFLICT_COLUMNS = ("id, kafka_partition, kafka_offset, campaign_id, customer_id, "
                    "'funnel_step' AS event_type, label, occurred_at")
"""A conflict's columns: enough to deduplicate it with fresh events."""


# ---- which hours summed rows answer -------------------------------------------------------

Span = tuple[int, int]


def split(ranges: Iterable[Span], summarized: set[int]
          ) -> tuple[list[Span], list[Span], list[Span]]:
    """(the whole days, then the other whole hours, of `ranges` in days of `summarized`,
    which summed rows answer; the rest of `ranges`, which the events answer), each
    sorted and merged."""
    days: list[Span] = []
    hours: list[Span] = []
    rest: list[Span] = []
    for a, b in ranges:
        for day in range(a // DAY_US, (b - 1) // DAY_US + 1):
            lo, hi = max(a, day * DAY_US), min(b, (day + 1) * DAY_US)
            first, last = -(-lo // HOUR_US) * HOUR_US, hi // HOUR_US * HOUR_US
            if day not in summarized or first >= last:
                rest.append((lo, hi))
            elif hi - lo == DAY_US:
                days.append((lo, hi))
            else:
                hours.append((first, last))
                rest += [(x, y) for x, y in ((lo, first), (last, hi)) if x < y]
    return _merged(days), _merged(hours), _merged(rest)


def _merged(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def days_of(ranges: Iterable[Span]) -> set[int]:
    """Every UTC day that `ranges` touch."""
    return {day for a, b in ranges for day in range(a // DAY_US, (b - 1) // DAY_US + 1)}
