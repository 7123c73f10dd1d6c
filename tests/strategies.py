"""Hypothesis strategies for event streams that stress the definitions.

Streams have exact duplicates (producer retries), shuffled arrival, late events that
move a journey's t1, events on hour and day edges, labels that are not funnel steps,
and events outside a small retention.
"""

from __future__ import annotations

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
