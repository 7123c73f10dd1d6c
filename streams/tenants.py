"""The tenants of `pulse simulate`'s world: campaigns, agents and a pool of customers.

A `TenantActor` (the plan's TenantDO) runs campaigns that start at different times of
the history, each with its own intent mix, channel mix, answer rate and two versions of
its script; its AI agents (voice and chat, some better than others) hold the
conversations, and it reports the usage they cost. Its customers live in one time zone,
so its traffic follows their local day and week (`streams.rhythm`).

Pure like `streams.actors`: the `random.Random` and the simulated time are passed in.
"""

from __future__ import annotations

import bisect
import itertools
import random

from .actors import (
    FOLLOW_UP_DELAY,
    INTENT_WEIGHTS,
    Agent,
    Campaign,
    CustomerActor,
    Draft,
    IdSequence,
    Item,
    Journey,
    Touch,
)
from .rhythm import DAY, HOUR, Calendar, log_uniform_us, seconds_us

NO_CAMPAIGN_SHARE = 0.04
"""Inbound conversations that no campaign started; they carry `campaign_id: null`."""

TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
                "tyrell", "soylent", "cyberdyne", "gringotts")
TENANT_ZONES = ("Europe/London", "America/New_York", "Europe/Berlin", "Asia/Kolkata",
                "America/Chicago", "Asia/Tokyo", "America/Sao_Paulo", "America/Los_Angeles",
                "Europe/Helsinki")
"""Where each tenant's customers live: the rhythm's local time, and producers' offsets."""
CAMPAIGN_THEMES = ("spring-promo", "renewals", "winback", "onboarding", "upsell", "survey",
                   "reactivation", "referrals")
VOICE_AGENTS = ("Ava", "Max", "Noor", "Leo", "Zoe", "Omar")
CHAT_AGENTS = ("Iris", "Sam", "Mila", "Kai")

SECOND_CAMPAIGN_SHARE = 0.25
"""New leads that are also in a second campaign, first touched hours to days later."""


class TenantActor:
    """A tenant: its campaigns, agents and pool of customers, and the usage it is billed for.

    `customers` is how many leads it works at a time. A new conversation goes to a new
    lead while the pool has room; when it is full, a customer in it gets in touch before
    its scheduled time, so any rate can be served while journeys stay hours to days
    long whenever the pool is large enough for the rate.
    """

    def __init__(self, index: int, campaigns: int, customers: int, steps: tuple[str, ...],
                 run: str, history: tuple[int, int], rnd: random.Random) -> None:
        self.tenant_id = _nth_name(TENANT_NAMES, index)
        self.calendar = Calendar(TENANT_ZONES[rnd.randrange(len(TENANT_ZONES))])
        self.campaigns = tuple(_campaign(self.tenant_id, _nth_name(CAMPAIGN_THEMES, j), j,
                                         history, rnd) for j in range(campaigns))
        self.agents = {"call": _agents(VOICE_AGENTS, 4, rnd), "chat": _agents(CHAT_AGENTS, 2, rnd)}
        self.steps = steps
        self.ids = IdSequence(f"{self.tenant_id}-{run}")
        self.pool: list[CustomerActor | None] = [None] * customers
        self.free = list(range(customers - 1, -1, -1))
        self.activity = list(itertools.accumulate(rnd.lognormvariate(0, 1)
                                                  for _ in range(customers)))
        """Cumulative weights of the pool's places: some customers get in touch a lot."""
        self.joined = 0
        self.call_seconds = 0.0
        self.chat_messages = 0
        self.conversations = 0
        self.report_every = rnd.randint(10, 30)
        """Conversations until the next usage report."""
        self._hours: dict[int, tuple[float, list[float]]] = {}

    def intensity(self, at_us: int) -> float:
        """How busy its campaigns are in this hour: the pace of its new conversations."""
        return self._hour(at_us)[0]

    def new_activity(self, now_us: int, rnd: random.Random) -> list[Item]:
        """A conversation starts now: a new lead, a walk-in, or a customer calling early."""
        if rnd.random() < NO_CAMPAIGN_SHARE:
            return self._walk_in(now_us, rnd)
        if self.free:
            return self._new_lead(now_us, rnd)
        return self.call_back_early(now_us, rnd)

    def run(self, touch: Touch, rnd: random.Random) -> list[Item]:
        """A scheduled conversation happens (unless the customer got in touch first)."""
        if touch.cancelled:
            return []
        customer = touch.customer
        items = customer.converse(touch.journey, touch.at_us, touch.channel, rnd)
        self._release_if_done(customer)
        return items

    def call_back_early(self, now_us: int, rnd: random.Random) -> list[Item]:
        """A customer of the full pool has its next touch now rather than when scheduled."""
        customer = self.pool[self._pick_place(rnd)]
        assert customer is not None, "a full pool has a customer in every place"
        touch = customer.next_touch()
        assert touch is not None, "a customer stays in the pool only while a touch is due"
        touch.cancelled = True
        return self.run(Touch(now_us, customer, touch.journey, touch.channel), rnd)

    def agent(self, channel: str, rnd: random.Random) -> Agent:
        agents, weights = self.agents[channel]
        return agents[bisect.bisect_right(weights, rnd.random() * weights[-1])]

    def record(self, at_us: int, channel: str, duration_s: float, messages: int,
               rnd: random.Random) -> list[Item]:
        """Count a conversation's cost; every 10-30 conversations, report it as usage."""
        self.conversations += 1
        if channel == "call":
            self.call_seconds += duration_s
        else:
            self.chat_messages += messages
        if self.conversations < self.report_every:
            return []
        at = at_us + seconds_us(1, 60, rnd)
        totals = {"call_minutes": round(self.call_seconds / 60, 3),
                  "chat_messages": self.chat_messages}
        drafts: list[Item] = [
            Draft(at, self.tenant_id, {
                "id": self.ids(), "tenant_id": self.tenant_id, "event_type": "usage",
                "occurred_at": None, "category": category, "value": value,
                "metadata": {"conversations": self.conversations}})
            for category, value in totals.items() if value
        ]
        self.call_seconds, self.chat_messages, self.conversations = 0.0, 0, 0
        self.report_every = rnd.randint(10, 30)
        return drafts

    def _new_lead(self, now_us: int, rnd: random.Random) -> list[Item]:
        campaign, channel = self._pick_campaign(now_us, rnd)
        customer = self._join(self.free.pop(), campaign, rnd)
        journey = customer.journeys[campaign.campaign_id] = Journey(campaign)
        items = customer.converse(journey, now_us, channel, rnd)
        others = [c for c in self.campaigns if c is not campaign and c.starts_us <= now_us]
        if others and rnd.random() < SECOND_CAMPAIGN_SHARE:
            second = rnd.choice(others)
            journey = customer.journeys[second.campaign_id] = Journey(second)
            at = self.calendar.answering_time(now_us + log_uniform_us(*FOLLOW_UP_DELAY, rnd),
                                              "call", rnd)
            journey.next = Touch(at, customer, journey, "call")
            items.append(journey.next)
        self._release_if_done(customer)
        return items

    def _walk_in(self, now_us: int, rnd: random.Random) -> list[Item]:
        """A customer gets in touch outside any campaign; a journey of its own."""
        customer = self.pool[self._pick_place(rnd)] or self._join(None, None, rnd)
        journey = customer.journeys.setdefault(None, Journey(None))
        channel = "chat" if rnd.random() < customer.chat_share else "call"
        return customer.converse(journey, now_us, channel, rnd)

    def _join(self, place: int | None, campaign: Campaign | None,
              rnd: random.Random) -> CustomerActor:
        self.joined += 1
        share = campaign.chat_share if campaign else 0.3
        customer = CustomerActor(f"{self.tenant_id}-cus-{self.joined:05d}", self,
                                 min(0.9, share * rnd.lognormvariate(0, 0.5)), place)
        if place is not None:
            self.pool[place] = customer
        return customer

    def _release_if_done(self, customer: CustomerActor) -> None:
        if customer.slot is not None and customer.next_touch() is None:
            self.pool[customer.slot] = None
            self.free.append(customer.slot)
            customer.slot = None

    def _pick_place(self, rnd: random.Random) -> int:
        place = bisect.bisect_right(self.activity, rnd.random() * self.activity[-1])
        return min(place, len(self.pool) - 1)

    def _pick_campaign(self, now_us: int, rnd: random.Random) -> tuple[Campaign, str]:
        """An active campaign, by how busy it is now, and the channel its contact uses."""
        total, weights = self._hour(now_us)
        index = min(bisect.bisect_right(weights, rnd.random() * total), len(weights) - 1)
        return self.campaigns[index // 2], "call" if index % 2 == 0 else "chat"

    def _hour(self, at_us: int) -> tuple[float, list[float]]:
        """(intensity, cumulative weights of (campaign, channel) pairs) of this hour."""
        hour = at_us // HOUR
        found = self._hours.get(hour)
        if found is None:
            call, chat = self.calendar.weights(at_us)
            middle = hour * HOUR + HOUR // 2
            weights = list(itertools.accumulate(
                w for c in self.campaigns
                for w in ((c.popularity * (1 - c.chat_share) * call,
                           c.popularity * c.chat_share * chat)
                          if c.starts_us <= middle else (0.0, 0.0))))
            found = self._hours[hour] = (weights[-1], weights)
        return found


def build_world(tenants: int, campaigns: int, customers: int, steps: tuple[str, ...],
                run: str, history: tuple[int, int], rnd: random.Random) -> list[TenantActor]:
    """The tenants of a run whose history starts at `history[0]` and lasts `history[1]`."""
    return [TenantActor(i, campaigns, customers, steps, run, history, rnd)
            for i in range(tenants)]


def _campaign(tenant_id: str, theme: str, index: int, history: tuple[int, int],
              rnd: random.Random) -> Campaign:
    """The first campaign runs from before the history; the others start inside it."""
    start, span = history
    starts = start - DAY if index == 0 or not span else start + int(span * rnd.uniform(0.1, 0.7))
    intents = tuple(itertools.accumulate(w * rnd.lognormvariate(0, 0.5) for w in INTENT_WEIGHTS))
    scripts = ((f"{theme}-v1", rnd.uniform(0.75, 1.0)), (f"{theme}-v2", rnd.uniform(1.0, 1.3)))
    return Campaign(f"{tenant_id}-{theme}", starts, rnd.uniform(0.5, 2.0),
                    rnd.choice((0.1, 0.25, 0.5)), rnd.uniform(0.55, 0.8), intents, scripts)


def _agents(names: tuple[str, ...], count: int,
            rnd: random.Random) -> tuple[list[Agent], list[float]]:
    """Some of `names`, and cumulative weights of who takes a conversation.

    Their skills are spread evenly from weak to strong (in random order), so a
    breakdown by agent always has a best and a worst worth telling apart.
    """
    skills = [0.7 + 0.6 * k / max(1, count - 1) for k in range(count)]
    rnd.shuffle(skills)
    agents = [Agent(name, round(skill * rnd.uniform(0.95, 1.05), 2))
              for name, skill in zip(rnd.sample(names, count), skills, strict=True)]
    return agents, list(itertools.accumulate(rnd.uniform(0.5, 1.5) for _ in agents))


def _nth_name(names: tuple[str, ...], n: int) -> str:
    """names[n], then `acme-2`, `globex-2`, ... once the list runs out."""
    base = names[n % len(names)]
    return base if n < len(names) else f"{base}-{n // len(names) + 1}"
