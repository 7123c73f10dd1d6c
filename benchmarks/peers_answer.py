"""The answer every job of `pulse bench peers` must give, and one row of its table.

The oracle is computed from the produced messages with Pulse's own decoder, so that
"exact" means: the same valid events, each (tenant_id, id) counted once, in the same
(tenant, campaign, UTC hour) and (tenant, intent label, UTC hour) cells. A job that
gets any cell wrong is not exact, however close its totals are.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event

HOUR_US = 3_600_000_000

Counts = dict[tuple[Any, ...], int]


@dataclass
class Answer:
    campaigns: Counts
    """(tenant, campaign or None, hour since the epoch) -> events."""
    intents: Counts
    """(tenant, intent label, hour since the epoch) -> intents."""


@dataclass
class Outcome:
    """One row of the table: a system's rate, peak RSS and whether its answer was exact."""

    key: str
    system: str
    rate: float | None = None
    seconds: float | None = None
    rss_mb: float | None = None
    exact: bool | None = None
    note: str = ""
    rollups_s: float | None = None
    """Pulse only: seconds until the rollups alone were complete."""
    load: float | None = None
    """1-minute load average when the run started: above ~1 others shared the cores."""

    @property
    def ran(self) -> bool:
        return self.rate is not None

    def record(self, base: float | None) -> dict[str, Any]:
        return {
            "system": self.system, "per_s": rounded(self.rate),
            "seconds": rounded(self.seconds, 2),
            "ratio_to_handwritten": rounded(self.rate / base, 3) if self.rate and base else None,
            "peak_rss_mb": rounded(self.rss_mb), "exact": self.exact, "note": self.note,
            "load_before": rounded(self.load, 2),
        }


def rounded(value: float | None, digits: int = 0) -> float | None:
    if value is None:
        return None
    return round(value, digits) if digits else round(value)


def oracle(messages: Iterable[tuple[bytes, bytes]]) -> Answer:
    """The exact answer, from Pulse's own decoder: valid events, first copy of each id."""
    now_us = time.time_ns() // 1000
    seen: set[tuple[str, str]] = set()
    campaigns: Counter[tuple[Any, ...]] = Counter()
    intents: Counter[tuple[Any, ...]] = Counter()
    for _, value in messages:
        event = decode_event(value, now_us)
        if not isinstance(event, Event) or (event.tenant_id, event.id) in seen:
            continue
        seen.add((event.tenant_id, event.id))
        hour = event.occurred_us // HOUR_US
        campaigns[(event.tenant_id, event.campaign_id, hour)] += 1
        if event.event_type == "intent_detected":
            intents[(event.tenant_id, event.label, hour)] += 1
    return Answer(dict(campaigns), dict(intents))


def counts(rows: Iterable[Iterable[Any]]) -> Counts:
    """Rows `(*key, n)` as a job writes them, summed per key (zero cells dropped)."""
    out: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        *key, n = row
        out[tuple(key)] += n
    return {k: v for k, v in out.items() if v}


def compare(truth: Answer, answer: Answer) -> tuple[bool, str]:
    """(exact, what differs) of an answer against the oracle."""
    problems = []
    for what, want, got in (("campaign-hours", truth.campaigns, answer.campaigns),
                            ("intent-hours", truth.intents, answer.intents)):
        wrong = sum(1 for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        if wrong:
            problems.append(f"{wrong:,} of {len(want):,} {what} differ "
                            f"(total {sum(got.values()):,} vs {sum(want.values()):,})")
    return not problems, "; ".join(problems)
