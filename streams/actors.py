"""The customers of `pulse simulate`'s world, and what their conversations produce.

A `CustomerActor` (the plan's CustomerDO) is one lead of a tenant (`streams.tenants`):
its journey in a campaign is a series of touches (calls or chats) hours to days apart,
at hours people answer. Unanswered calls are tried again; an answered one can be picked
up, show interest and qualify, and most journeys stop on the way, some after interest.
The campaign's intent mix, the agent's skill and the script's lift shape each outcome.

Everything here is pure: the `random.Random` and the simulated time (microseconds since
the epoch) are passed in, nothing reads a clock or does I/O, so a seed replays exactly.
Actors return `Draft`s (events) and `Touch`es (conversations they scheduled for later);
`streams.traffic` runs both in time order and picks each event's wire form.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .rhythm import DAY, HOUR, log_uniform_us, seconds_us

if TYPE_CHECKING:
    from .tenants import TenantActor

INTENTS = ("interested", "not_interested", "callback_requested", "question",
           "price_inquiry", "wrong_number", "do_not_call")
INTENT_WEIGHTS = (30, 24, 12, 14, 9, 6, 5)
NEGATIVE_INTENTS = frozenset({"not_interested", "wrong_number"})
STEP_CHANCE = {"interested": 0.7, "price_inquiry": 0.45, "callback_requested": 0.4,
               "question": 0.2}
"""Chance that a conversation with this intent takes a picked-up journey a step further."""
TAGS = ("vip", "hot-lead", "churn-risk", "follow-up", "spanish-speaker", "do-not-call")
OPTED_OUT = "opted_out"
"""A `funnel_step` label that is not a funnel step: stored, never counted."""

MAX_MISSES = 3
"""Unanswered touches in a row before a journey is given up."""
MAX_TOUCHES = 8
RETRY_DELAY = (2 * HOUR, 30 * HOUR)
"""After an unanswered call or a customer who hung up."""
FOLLOW_UP_DELAY = (HOUR // 2, 2 * DAY)
"""After a picked-up conversation that did not go further: the callback."""
QUALIFY_DELAY = (HOUR, 3 * DAY)
"""After "interested": the call that may qualify the customer."""
KEEP_GOING = (0.85, 0.6, 0.75)
"""Chance of another touch when the journey has reached 0, 1, 2+ steps (else it stalls)."""
WITHOUT_METADATA = 0.08
"""Conversations from an older integration that sends no metadata."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event an actor decided on, before `streams.traffic` picks its wire form."""

    at_us: int
    """When it occurred (simulated time)."""
    key: str
    """Kafka key: the customer id, or the tenant id for usage."""
    fields: dict[str, Any]
    """Every wire field, in wire order; `occurred_at` is None until `streams.traffic`
    picks its form (and then encodes this very dict: a draft is sent once)."""


class IdSequence:
    """Event ids `<tenant>-<run>-<n>`: unique per run, the same when a run is repeated.

    The run token comes from the seed and start, so a repeated run re-sends exact
    duplicates (counted once) while a run with another seed or start never collides.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count:08d}"


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    starts_us: int
    """Nothing of it happens before; campaigns start at different times of the history."""
    popularity: float
    chat_share: float
    answer_rate: float
    """Share of its calls that someone answers."""
    intents: tuple[float, ...]
    """Cumulative weights of `INTENTS`: each campaign hears its own mix."""
    scripts: tuple[tuple[str, float], ...]
    """(name, lift) of its two script versions; lift multiplies engagement and steps."""


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    skill: float
    """Multiplies engagement and conversion, so a breakdown by agent differs."""


@dataclass(slots=True, eq=False)
class Journey:
    """A customer's progress in one campaign's funnel (steps are reached in order)."""

    campaign: Campaign | None
    reached: int = 0
    misses: int = 0
    touches: int = 0
    ended: bool = False
    """Converted, opted out, dropped off or stalled: no further steps."""
    next: Touch | None = None
    """Its scheduled next conversation, if any."""


@dataclass(slots=True, eq=False)
class Touch:
    """A conversation a journey scheduled for later (a retry, a callback, a follow-up)."""

    at_us: int
    customer: CustomerActor
    journey: Journey
    channel: str
    cancelled: bool = False
    """The customer got in touch first (`TenantActor.call_back_early`)."""


Item = Draft | Touch


class CustomerActor:
    """One lead of one tenant, in one or two of its campaigns."""

    __slots__ = ("customer_id", "tenant", "chat_share", "journeys", "tags", "slot")

    def __init__(self, customer_id: str, tenant: TenantActor, chat_share: float,
                 slot: int | None) -> None:
        self.customer_id = customer_id
        self.tenant = tenant
        self.chat_share = chat_share
        self.journeys: dict[str | None, Journey] = {}
        self.tags: list[str] = []
        self.slot = slot
        """Its place in the tenant's pool of customers; None for a one-off walk-in."""

    def next_touch(self) -> Touch | None:
        touches = [j.next for j in self.journeys.values() if j.next is not None]
        return min(touches, key=lambda t: t.at_us) if touches else None

    def converse(self, journey: Journey, at_us: int, channel: str,
                 rnd: random.Random) -> list[Item]:
        """A call or chat ends now; intent, steps and tag follow seconds later, and the
        journey schedules its next touch (or ends)."""
        tenant, campaign = self.tenant, journey.campaign
        agent = tenant.agent(channel, rnd)
        script, lift = _pick_script(campaign, rnd)
        knack = agent.skill * lift
        rate = campaign.answer_rate if campaign else 0.9
        answered = channel == "chat" or rnd.random() < rate
        duration = _duration_s(channel, knack, rnd) if answered else round(rnd.uniform(0, 9.9), 1)
        messages = max(1, round(duration / 25 + rnd.uniform(0, 3))) if channel == "chat" else 0
        items: list[Item] = [self._conversation(at_us, journey, channel, duration, messages,
                                                agent, script, answered, rnd)]
        at = at_us + seconds_us(1, 8, rnd)
        intent = None
        if duration >= 8 and rnd.random() < 0.8:
            intent = _pick_intent(campaign, knack, rnd)
            extra: dict[str, Any] = {"label": intent}
            confidence = {"confidence": round(rnd.uniform(0.55, 0.99), 2)}
            if rnd.random() < 0.3:
                extra["metadata"] = confidence
            items.append(self._event("intent_detected", at, campaign, extra))
        steps = self._advance(journey, duration, intent, knack, rnd)
        for step in steps:
            at += seconds_us(1, 5, rnd)
            items.append(self._event("funnel_step", at, campaign, {"label": step}))
        tag = self._tag_change(steps[-1] if steps else None, intent, rnd)
        if tag is not None:
            at += seconds_us(1, 30, rnd)
            items.append(self._event("tag_changed", at, campaign,
                                     {"label": tag[0], "metadata": {"op": tag[1]}}))
        journey.next = self._follow_up(journey, at_us, intent, rnd)
        if journey.next is not None:
            items.append(journey.next)
        items.extend(tenant.record(at_us, channel, duration, messages, rnd))
        return items

    def _conversation(self, at_us: int, journey: Journey, channel: str, duration: float,
                      messages: int, agent: Agent, script: str | None, answered: bool,
                      rnd: random.Random) -> Draft:
        extra: dict[str, Any] = {"value": duration}
        if rnd.random() < 0.5:
            extra["channel"] = channel
        if rnd.random() >= WITHOUT_METADATA:
            meta: dict[str, Any] = {"agent": agent.name}
            if script is not None:
                meta["script"] = script
            if channel == "chat":
                meta["messages"] = messages
            else:
                meta["outcome"] = ("completed" if duration >= 10 else "hung_up") if answered \
                    else rnd.choice(("no_answer", "voicemail"))
            extra["metadata"] = meta
        return self._event(f"{channel}_ended", at_us, journey.campaign, extra)

    def _advance(self, journey: Journey, duration: float, intent: str | None, knack: float,
                 rnd: random.Random) -> list[str]:
        """The funnel steps this conversation reaches: picked up when someone really
        talked, further steps with a chance that follows the intent and the agent."""
        steps = self.tenant.steps
        if journey.ended or journey.reached == len(steps):
            return []
        if intent == "do_not_call":
            journey.ended = True
            return [OPTED_OUT]
        if duration < 10:  # nobody there, or hung up straight away
            journey.misses += 1
            return []
        journey.misses = 0
        reached: list[str] = []
        if journey.reached == 0:
            if rnd.random() >= 0.92:
                return []
            journey.reached = 1
            reached.append(steps[0])
            if intent != "interested":
                return reached
        chance = STEP_CHANCE.get(intent or "", 0.08) * knack
        if journey.reached < len(steps) and rnd.random() < chance:
            journey.reached += 1
            reached.append(steps[journey.reached - 1])
        return reached

    def _follow_up(self, journey: Journey, at_us: int, intent: str | None,
                   rnd: random.Random) -> Touch | None:
        """The journey's next touch, hours to days on at an hour people answer, or None."""
        journey.touches += 1
        if journey.campaign is None or journey.ended:
            return None
        if journey.misses or journey.reached == 0:
            delay = RETRY_DELAY
        else:
            delay = FOLLOW_UP_DELAY if journey.reached == 1 else QUALIFY_DELAY
        journey.ended = (journey.reached == len(self.tenant.steps)
                         or journey.touches >= MAX_TOUCHES or journey.misses >= MAX_MISSES
                         or (intent in NEGATIVE_INTENTS and rnd.random() < 0.85)
                         # dropped off, or stalled after showing interest:
                         or rnd.random() >= KEEP_GOING[min(journey.reached, 2)])
        if journey.ended:
            return None
        channel = "chat" if rnd.random() < self.chat_share else "call"
        at = self.tenant.calendar.answering_time(at_us + log_uniform_us(*delay, rnd), channel,
                                                 rnd)
        return Touch(at, self, journey, channel)

    def _tag_change(self, step: str | None, intent: str | None,
                    rnd: random.Random) -> tuple[str, str] | None:
        """(tag, "add" or "remove"), mostly following what just happened."""
        if step is not None and step == self.tenant.steps[-1]:
            tag = "hot-lead"
        elif intent == "do_not_call":
            tag = "do-not-call"
        elif rnd.random() < 0.04:
            tag = rnd.choice(TAGS)
        else:
            return None
        if tag in self.tags:
            if tag in ("hot-lead", "do-not-call"):
                return None
            self.tags.remove(tag)
            return tag, "remove"
        self.tags.append(tag)
        return tag, "add"

    def _event(self, event_type: str, at_us: int, campaign: Campaign | None,
               extra: dict[str, Any]) -> Draft:
        fields = {"id": self.tenant.ids(), "tenant_id": self.tenant.tenant_id,
                  "event_type": event_type, "occurred_at": None,
                  "customer_id": self.customer_id,
                  "campaign_id": campaign.campaign_id if campaign else None, **extra}
        return Draft(at_us, self.customer_id, fields)


def _pick_script(campaign: Campaign | None, rnd: random.Random) -> tuple[str | None, float]:
    if campaign is None:
        return None, 1.0
    return campaign.scripts[rnd.random() < 0.5]


_WALK_IN_INTENTS = tuple(itertools.accumulate(INTENT_WEIGHTS))


def _pick_intent(campaign: Campaign | None, knack: float, rnd: random.Random) -> str:
    """The campaign's own mix; a better agent turns some refusals into questions."""
    weights = campaign.intents if campaign else _WALK_IN_INTENTS
    index = bisect.bisect_right(weights, rnd.random() * weights[-1])
    intent = INTENTS[min(index, len(INTENTS) - 1)]
    if intent in NEGATIVE_INTENTS and knack > 1 and rnd.random() < knack - 1:
        return "question"
    return intent


def _duration_s(channel: str, knack: float, rnd: random.Random) -> float:
    """Seconds, to 0.1 s, of an answered conversation: a better agent keeps people longer."""
    if rnd.random() < (0.28 if channel == "call" else 0.15) / knack ** 1.5:
        return round(rnd.uniform(0, 30), 1)  # a quick "no", or hung up on the agent
    median = (110 if channel == "call" else 240) * math.sqrt(knack)
    return round(min(3600.0, median * math.exp(rnd.gauss(0, 0.6))), 1)
