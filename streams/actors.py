"""The simulated world of `pulse simulate`: tenants, their campaigns and their customers.

A `CustomerActor` is one customer of one tenant (the plan's CustomerDO): its calls and
chats end, intents are detected after them, its journey in each of its campaigns moves
through the funnel steps in order (most customers stop early), and its tags change
now and then. A `TenantActor` (the plan's TenantDO) owns the campaigns and customers
and reports the usage its conversations cost.

Everything here is pure: the `random.Random` and the simulated time (microseconds
since the epoch) are passed in, nothing reads a clock or does I/O, so a seed replays
exactly. Actors return `Draft`s; choosing the wire form of `occurred_at`, lateness,
duplicates and broken messages is `streams.traffic`'s business.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

SECOND = 1_000_000
"""Simulated time is in microseconds."""

NO_CAMPAIGN_SHARE = 0.04
"""Inbound conversations that no campaign started; they carry `campaign_id: null`."""

TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
                "tyrell", "soylent", "cyberdyne", "gringotts")
CAMPAIGN_THEMES = ("spring-promo", "renewals", "winback", "onboarding", "upsell", "survey",
                   "reactivation", "referrals")
UTC_OFFSETS_MIN = (0, 60, 120, 330, 540, -180, -240, -300, -420)
"""Each tenant's producers stamp local times with one of these offsets (minutes)."""

INTENTS = ("interested", "not_interested", "callback_requested", "question",
           "price_inquiry", "wrong_number", "do_not_call")
INTENT_WEIGHTS = (30, 24, 12, 14, 9, 6, 5)
POSITIVE_INTENTS = frozenset({"interested", "callback_requested", "price_inquiry"})
TAGS = ("vip", "hot-lead", "churn-risk", "follow-up", "spanish-speaker", "do-not-call")
REPLACE_SHARE = 0.2
"""Chance that a customer whose journeys have all ended gives way to a new lead."""
OPTED_OUT = "opted_out"
"""A `funnel_step` label that is not a funnel step: stored, never counted."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event an actor decided on, before `streams.traffic` picks its wire form."""

    at_us: int
    """When it occurred (simulated time)."""
    key: str
    """Kafka key: the customer id, or the tenant id for usage."""
    fields: dict[str, Any]
    """Every wire field but `occurred_at`, in wire order."""


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


@dataclass(slots=True)
class Journey:
    """A customer's progress in one campaign's funnel."""

    reached: int = 0
    """How many funnel steps it has had (they are emitted in order)."""
    stopped: bool = False
    """The customer dropped out; no further steps."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a finished call or chat cost the tenant."""

    channel: str
    duration_s: float
    messages: int


class CustomerActor:
    """One customer of one tenant, in one or two of its campaigns."""

    __slots__ = ("customer_id", "tenant_id", "campaigns", "chat_share", "steps", "ids",
                 "journeys", "tags")

    def __init__(self, customer_id: str, tenant_id: str, campaigns: tuple[str, ...],
                 chat_share: float, steps: tuple[str, ...], ids: IdSequence) -> None:
        self.customer_id = customer_id
        self.tenant_id = tenant_id
        self.campaigns = campaigns
        self.chat_share = chat_share
        self.steps = steps
        self.ids = ids
        self.journeys: dict[str | None, Journey] = {}
        self.tags: list[str] = []

    def finished(self) -> bool:
        """Every journey of its campaigns has converted or dropped out."""
        done = len(self.steps)
        return all((j := self.journeys.get(c)) is not None and (j.stopped or j.reached == done)
                   for c in self.campaigns)

    def converse(self, now_us: int, rnd: random.Random) -> tuple[Conversation, list[Draft]]:
        """A call or chat ends now; its intent, funnel step and tag follow seconds later."""
        campaign = None if rnd.random() < NO_CAMPAIGN_SHARE else rnd.choice(self.campaigns)
        channel = "chat" if rnd.random() < self.chat_share else "call"
        duration = _duration_s(channel, rnd)
        messages = max(1, round(duration / 25 + rnd.uniform(0, 3))) if channel == "chat" else 0
        drafts = [self._conversation(now_us, campaign, channel, duration, messages, rnd)]
        at = now_us + rnd.randint(1, 8) * SECOND
        intent = None
        if duration >= 8 and rnd.random() < 0.8:
            intent = rnd.choices(INTENTS, INTENT_WEIGHTS)[0]
            confidence = {"confidence": round(rnd.uniform(0.55, 0.99), 2)}
            drafts.append(self._event("intent_detected", at, campaign, label=intent,
                                      metadata=confidence if rnd.random() < 0.3 else None))
        step = self._next_step(campaign, duration, intent, rnd)
        if step is not None:
            at += rnd.randint(1, 5) * SECOND
            drafts.append(self._event("funnel_step", at, campaign, label=step))
        tag = self._tag_change(step, intent, rnd)
        if tag is not None:
            at += rnd.randint(1, 30) * SECOND
            drafts.append(self._event("tag_changed", at, campaign, label=tag[0],
                                      metadata={"op": tag[1]}))
        return Conversation(channel, duration, messages), drafts

    def _conversation(self, now_us: int, campaign: str | None, channel: str, duration: float,
                      messages: int, rnd: random.Random) -> Draft:
        extra: dict[str, Any] = {"value": duration}
        if rnd.random() < 0.5:
            extra["channel"] = channel
        if rnd.random() < 0.3:
            extra["metadata"] = (
                {"agent": f"chat-agent-{rnd.randint(1, 4)}", "messages": messages}
                if channel == "chat"
                else {"agent": f"voice-agent-{rnd.randint(1, 6)}",
                      "outcome": "completed" if duration >= 10 else
                      rnd.choice(("no_answer", "voicemail", "hung_up"))})
        return self._event(f"{channel}_ended", now_us, campaign, **extra)

    def _next_step(self, campaign: str | None, duration: float, intent: str | None,
                   rnd: random.Random) -> str | None:
        """Advance this campaign's journey by at most one step; most journeys stop early."""
        journey = self.journeys.setdefault(campaign, Journey())
        if journey.stopped or journey.reached == len(self.steps):
            return None
        if intent == "do_not_call":
            journey.stopped = True
            return OPTED_OUT
        if journey.reached == 0:
            chance = 0.85 if duration >= 10 else 0.1
        else:
            chance = 0.5 if intent in POSITIVE_INTENTS else 0.12
        if rnd.random() < chance:
            journey.reached += 1
            return self.steps[journey.reached - 1]
        if rnd.random() < (0.5 if journey.reached else 0.2):
            journey.stopped = True
        return None

    def _tag_change(self, step: str | None, intent: str | None,
                    rnd: random.Random) -> tuple[str, str] | None:
        """(tag, "add" or "remove"), mostly following what just happened."""
        if step is not None and step == self.steps[-1]:
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

    def _event(self, event_type: str, at_us: int, campaign: str | None,
               **extra: Any) -> Draft:
        fields = {"id": self.ids(), "tenant_id": self.tenant_id, "event_type": event_type,
                  "customer_id": self.customer_id, "campaign_id": campaign}
        fields.update((k, v) for k, v in extra.items() if v is not None)
        return Draft(at_us, self.customer_id, fields)


class TenantActor:
    """A tenant: its campaigns, its customers, and the usage it is billed for.

    `customers` is how many customers it has at a time: a customer whose journeys
    have all ended (converted or dropped out) is now and then replaced by a new lead,
    so funnel entries keep coming however long a run lasts.
    """

    def __init__(self, index: int, campaigns: int, customers: int, steps: tuple[str, ...],
                 run: str, rnd: random.Random) -> None:
        self.tenant_id = _nth_name(TENANT_NAMES, index)
        self.campaigns = tuple(f"{self.tenant_id}-{_nth_name(CAMPAIGN_THEMES, j)}"
                               for j in range(campaigns))
        self.popularity = [rnd.uniform(0.5, 2.0) for _ in self.campaigns]
        self.steps = steps
        self.ids = IdSequence(f"{self.tenant_id}-{run}")
        self.utc_offset_min = rnd.choice(UTC_OFFSETS_MIN)
        """The offset its producers stamp local times with."""
        self.joined = 0
        self.customers = [self._new_customer(rnd) for _ in range(customers)]
        self.activity = list(itertools.accumulate(
            rnd.lognormvariate(0, 1) for _ in self.customers))
        """Cumulative activity weights of the customer slots: a few talk a lot."""
        self.call_seconds = 0.0
        self.chat_messages = 0
        self.conversations = 0
        self.report_every = rnd.randint(10, 30)
        """Conversations until the next usage report."""

    def step(self, now_us: int, rnd: random.Random) -> list[Draft]:
        """One of its customers finishes a conversation now; usage is reported after it."""
        slot = min(bisect.bisect_right(self.activity, rnd.random() * self.activity[-1]),
                   len(self.customers) - 1)
        if self.customers[slot].finished() and rnd.random() < REPLACE_SHARE:
            self.customers[slot] = self._new_customer(rnd)
        conversation, drafts = self.customers[slot].converse(now_us, rnd)
        self._record(conversation)
        if self.conversations >= self.report_every:
            drafts.extend(self._report(now_us + rnd.randint(1, 60) * SECOND, rnd))
        return drafts

    def _new_customer(self, rnd: random.Random) -> CustomerActor:
        count = 2 if len(self.campaigns) > 1 and rnd.random() < 0.3 else 1
        campaigns = _distinct_choices(self.campaigns, self.popularity, count, rnd)
        self.joined += 1
        return CustomerActor(f"{self.tenant_id}-cus-{self.joined:05d}", self.tenant_id,
                             campaigns, rnd.choice((0.1, 0.3, 0.7)), self.steps, self.ids)

    def _record(self, conversation: Conversation) -> None:
        self.conversations += 1
        if conversation.channel == "call":
            self.call_seconds += conversation.duration_s
        else:
            self.chat_messages += conversation.messages

    def _report(self, at_us: int, rnd: random.Random) -> list[Draft]:
        """`usage` events for what was used since the last report, then start over."""
        totals = {"call_minutes": round(self.call_seconds / 60, 3),
                  "chat_messages": self.chat_messages}
        drafts = [
            Draft(at_us, self.tenant_id, {
                "id": self.ids(), "tenant_id": self.tenant_id, "event_type": "usage",
                "category": category, "value": value,
                "metadata": {"conversations": self.conversations}})
            for category, value in totals.items() if value
        ]
        self.call_seconds, self.chat_messages, self.conversations = 0.0, 0, 0
        self.report_every = rnd.randint(10, 30)
        return drafts


def build_world(tenants: int, campaigns: int, customers: int, steps: tuple[str, ...],
                run: str, rnd: random.Random) -> list[TenantActor]:
    return [TenantActor(i, campaigns, customers, steps, run, rnd) for i in range(tenants)]


def _duration_s(channel: str, rnd: random.Random) -> float:
    """Seconds, to 0.1 s: some short (no answer, a quick "no"), most well over 30 s."""
    if rnd.random() < (0.3 if channel == "call" else 0.2):
        return round(rnd.uniform(0, 30), 1)
    median = 110 if channel == "call" else 240
    return round(min(3600.0, median * math.exp(rnd.gauss(0, 0.6))), 1)


def _nth_name(names: tuple[str, ...], n: int) -> str:
    """names[n], then `acme-2`, `globex-2`, ... once the list runs out."""
    base = names[n % len(names)]
    return base if n < len(names) else f"{base}-{n // len(names) + 1}"


def _distinct_choices(items: tuple[str, ...], weights: list[float], count: int,
                      rnd: random.Random) -> tuple[str, ...]:
    chosen: list[str] = []
    while len(chosen) < count:
        item = rnd.choices(items, weights)[0]
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)
