"""Hypothesis strategies for event streams that stress the definitions.

`streams` have exact duplicates (producer retries), shuffled arrival, late events that
move a journey's t1, events on hour and day edges, labels that are not funnel steps,
and events outside a small retention. Cases that random streams reach only by chance are
forced by their own strategies: `edge_journeys` (equal timestamps within a journey,
steps before t1, whole-second durations a window can equal, and a late event that
changes reach under `order=sequence` only) and `tied_conversations` (breakdown groups
with equal counts).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import strategies as st

from pulse.schemas.events import Event

HOUR = 3_600_000_000
BASE_US = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp()) * 1_000_000
STEPS = ("picked_up", "interested", "qualified")
TENANTS = ("acme", "globex")
CAMPAIGNS = (None, "spring", "winter")
CUSTOMERS = tuple(f"cust-{i}" for i in range(5))
INTENT_LABELS = ("buy", "cancel", "question")
EDGES = (0, 1, HOUR // 2, HOUR - 1)


@st.composite
def times(draw: st.DrawFn, spread_hours: int = 72) -> int:
    hour = draw(st.integers(-spread_hours, spread_hours))
    within = draw(st.sampled_from(EDGES) | st.integers(0, HOUR - 1))
    return BASE_US + hour * HOUR + within


@st.composite
def events(draw: st.DrawFn, event_id: str, spread_hours: int = 72) -> Event:
    kind = draw(st.sampled_from(
        ["call_ended", "chat_ended", "intent_detected", "funnel_step", "funnel_step",
         "tag_changed", "usage"]
    ))
    tenant = draw(st.sampled_from(TENANTS))
    campaign = draw(st.sampled_from(CAMPAIGNS))
    customer = None if kind == "usage" else draw(st.sampled_from(CUSTOMERS))
    channel = None
    label = category = None
    value = None
    if kind in ("call_ended", "chat_ended"):
        channel = draw(st.sampled_from([None, "call", "chat"]))
        channel = channel or ("call" if kind == "call_ended" else "chat")
        value = draw(st.sampled_from([0.0, 29.999, 30.0, 30.5, 125.25]) | st.floats(0, 900))
    elif kind == "intent_detected":
        label = draw(st.sampled_from(INTENT_LABELS))
    elif kind == "funnel_step":
        label = draw(st.sampled_from(STEPS + ("voicemail",)))
    elif kind == "tag_changed":
        label = draw(st.sampled_from(("vip", "churn-risk")))
    else:
        category = draw(st.sampled_from(("call_minutes", "sms")))
        value = draw(st.sampled_from([1.0, 2.5]) | st.floats(0, 100))
    return Event(tenant, event_id, kind, draw(times(spread_hours)), customer, campaign, channel,
                 category, label, value, None, 1)


@st.composite
def streams(draw: st.DrawFn, max_events: int = 60, spread_hours: int = 72) -> list[Event]:
    """Unique events plus exact copies of some of them, in a shuffled arrival order."""
    n = draw(st.integers(1, max_events))
    originals = [draw(events(f"ev-{i}", spread_hours)) for i in range(n)]
    copies = draw(st.lists(st.sampled_from(originals), max_size=n // 2))
    return draw(st.permutations(originals + copies))


SECOND = 1_000_000
WHOLE_SECONDS = (0, 0, 1, 59, 60, 3600, 86_400)
"""Gaps between a journey's steps: 0 makes equal timestamps; the rest are durations a
`window` (whole seconds) can equal exactly."""
JOURNEY_SHAPES = ("equal", "spaced", "late_sequence", "out_of_order")


@st.composite
def edge_journeys(draw: st.DrawFn, max_journeys: int = 4,
                  spread_hours: int = 72) -> tuple[list[Event], list[Event]]:
    """(events, late events) of journeys built on the funnel definitions' edges; each
    journey a customer of its own (`edge-<i>`), its t1 anywhere, its other steps whole
    seconds from it:

    - `equal`: every step at t1 itself, S1 twice (two ids, one time);
    - `spaced`: S1, then S2 and S3 a drawn number of whole seconds apart (0 included);
    - `late_sequence`: S2 only before t1 and S3 after it, so under `sequence` it reached
      step 1 only, until its late event, an S2 between t1 and S3, makes it step 3
      (under `any` it was step 3 all along);
    - `out_of_order`: S3 before S2 (step 3 under `any`, step 2 under `sequence`).

    Late events are meant to arrive after all the others.
    """
    events: list[Event] = []
    late: list[Event] = []
    for i in range(draw(st.integers(1, max_journeys))):
        tenant = draw(st.sampled_from(TENANTS))
        campaign = draw(st.sampled_from(CAMPAIGNS))
        t1 = draw(times(spread_hours))
        shape = draw(st.sampled_from(JOURNEY_SHAPES))
        a, b = (draw(st.sampled_from(WHOLE_SECONDS)) * SECOND for _ in range(2))
        on_time, arriving_late = _journey_steps(shape, t1, a, b)
        for into, when, steps in ((events, "on-time", on_time), (late, "late", arriving_late)):
            into += [Event(tenant, f"edge-{i}-{when}-{n}", "funnel_step", at, f"edge-{i}",
                           campaign, None, None, STEPS[k], None, None, 1)
                     for n, (k, at) in enumerate(steps)]
    return draw(st.permutations(events)), late


def _journey_steps(shape: str, t1: int, a: int, b: int
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(on time, late) (step index, time) of one `edge_journeys` journey."""
    if shape == "equal":
        return [(0, t1), (0, t1), (1, t1), (2, t1)], []
    if shape == "spaced":
        return [(0, t1), (1, t1 + a), (2, t1 + a + b)], []
    if shape == "late_sequence":
        return [(0, t1), (1, t1 - max(a, SECOND)), (2, t1 + a + b)], [(1, t1 + a)]
    return [(0, t1), (2, t1 + a), (1, t1 + a + max(b, SECOND))], []


BREAKDOWN_VALUES = ("B", "a", "b", "é", "10", "9", "true")
"""Metadata values whose code-point order differs from a case-blind, accented or numeric
one."""


@st.composite
def tied_conversations(draw: st.DrawFn, tenant: str, frm: int, to: int) -> list[Event]:
    """Conversations in [frm, to) whose groups tie by count under every breakdown: each
    (channel, campaign, agent) combination of drawn sets gets the same number of them, so
    channels, campaigns (null included) and agents (absent included) each tie, and only
    the order by value (null last) can rank them."""
    per_group = draw(st.integers(1, 2))
    agents = draw(st.lists(st.none() | st.sampled_from(BREAKDOWN_VALUES), min_size=1,
                           max_size=4, unique=True))
    campaigns = draw(st.lists(st.sampled_from(CAMPAIGNS), min_size=1, max_size=3,
                              unique=True))
    edge = st.sampled_from([frm, to - 1]) | st.integers(frm, to - 1)
    out = []
    for channel in ("call", "chat"):
        for campaign in campaigns:
            for agent in agents:
                for n in range(per_group):
                    kind = draw(st.sampled_from(["call_ended", "chat_ended"]))
                    value = draw(st.sampled_from([0.0, 30.0, 61.5]))
                    metadata = None if agent is None else json.dumps({"agent": agent})
                    out.append(Event(tenant, f"tie-{channel}-{campaign}-{agent}-{n}", kind,
                                     draw(edge), f"cust-{n}", campaign, channel, None, None,
                                     value, metadata, 1))
    return out
