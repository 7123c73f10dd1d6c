"""Fixtures of the browser tests: one real Pulse stack with known events, one Chromium.

The stack (worker + API on the session broker, own topics, lake and state) is built once
for all the browser tests (package scope): a worker takes ~10 s to start, and every test
only reads from it. So is the browser. Each test
gets a fresh browser context (empty sessionStorage, so no key or table toggle leaks from
one test into the next) through `open_page`, which records console errors, page errors
and every `/analytics/*` request the page sends.

Chromium is Debian's `chromium` package, driven by Playwright for Python; a missing
browser or a missing Playwright fails the tests, it never skips them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from pulse.benchmarks.harness import free_port
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from tests.deployment import Proc, Pulse

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("PULSE_TEST_CHROMIUM", "/usr/bin/chromium")
# Not UTC, and not a whole hour off it: the page's default zone, so its buckets are local.
TIMEZONE = "Asia/Kolkata"
BROWSER_ZONES = {"Asia/Kolkata", "Asia/Calcutta"}
"""How a browser may name TIMEZONE (Chromium says Asia/Calcutta: the tz database's link)."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

ADMIN_KEY = "admin-key-0001"
ACME_KEY = "acme-key-00001"
GLOBEX_KEY = "globex-key-0001"
API_KEYS = f"{ADMIN_KEY}=*,{ACME_KEY}=acme,{GLOBEX_KEY}=globex"
STEPS = ("picked_up", "interested", "qualified")  # PULSE_FUNNEL_STEPS default

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
OLD_MINUTES = 3 * 24 * 60 + 17  # "3 days ago": in the last 7 days, not in the last 24 hours


# ---- the known events ---------------------------------------------------------------


def known_events(now_ms: int) -> list[dict[str, Any]]:
    """Two tenants, several campaigns, every event type; times in minutes before now.

    Recent events lie 2 min to 20 h before now, inside the dashboard's default preset
    ("Last 24 hours" = the 24 UTC hours ending with the current one, state.ts) even if
    the hour turns during the run. Durations and usage values are binary fractions, so
    their sums are exact whatever order the pipeline adds them in.
    """
    events: list[dict[str, Any]] = []

    def add(tenant: str, kind: str, minutes_ago: int, campaign: str | None, **fields: Any) -> None:
        events.append({
            "id": f"e{len(events):04d}",
            "tenant_id": tenant,
            "event_type": kind,
            "occurred_at": now_ms - minutes_ago * MINUTE_MS,
            "campaign_id": campaign,
            **fields,
        })

    def conv(tenant: str, campaign: str | None, customer: str, channel: str, seconds: float,
             minutes_ago: int, **more: Any) -> None:
        add(tenant, f"{channel}_ended", minutes_ago, campaign, customer_id=customer,
            value=seconds, **more)

    def intent(tenant: str, campaign: str | None, customer: str, label: str,
               minutes_ago: int) -> None:
        add(tenant, "intent_detected", minutes_ago, campaign, customer_id=customer, label=label)

    def step(tenant: str, campaign: str | None, customer: str, label: str,
             minutes_ago: int) -> None:
        add(tenant, "funnel_step", minutes_ago, campaign, customer_id=customer, label=label)

    def usage(tenant: str, category: str, value: float, minutes_ago: int) -> None:
        add(tenant, "usage", minutes_ago, None, category=category, value=value)

    # acme / spring: 5 calls + 3 chats, 5 engaged (>= 30 s), avg 38.25 s (a tie for
    # toFixed(1): "38.3 s", where Python's round-half-even says 38.2), 6 intents,
    # funnel 4 -> 2 -> 1. Metadata of every kind the breakdown groups by.
    agents: list[Any] = ["ava", "bo", "ava", 7, None, "bo", 2.5, True]
    for i, (channel, seconds, ago) in enumerate([
        ("call", 13.5, 30), ("call", 45.5, 95), ("call", 30, 200), ("call", 61.25, 410),
        ("call", 90, 1190), ("chat", 5, 12), ("chat", 31, 300), ("chat", 29.75, 700),
    ]):
        meta = {} if agents[i] is None else {"metadata": {"agent": agents[i], "script": "v2"}}
        conv("acme", "spring", f"s{i}", channel, seconds, ago, **meta)
    for label, ago in [("buy", 40), ("buy", 41), ("buy", 600), ("question", 50),
                       ("question", 900), ("cancel", 1000)]:
        intent("acme", "spring", "s1", label, ago)
    for customer, labels in [
        ("s1", ["picked_up", "interested", "qualified"]),
        ("s2", ["picked_up", "interested"]),
        ("s3", ["picked_up"]),
        ("s4", ["qualified", "picked_up"]),  # no "interested": reached step 1 only
        ("s5", ["interested"]),  # never picked up: not in the funnel
    ]:
        for j, label in enumerate(labels):
            step("acme", "spring", customer, label, 500 - 10 * j)
    # acme / summer: 2 calls, 3 intents, funnel 2 -> 1 -> 0, a non-step label, a tag.
    conv("acme", "summer", "u1", "call", 120, 60)
    conv("acme", "summer", "u2", "call", 10, 70)
    for label, ago in [("callback", 80), ("callback", 81), ("buy", 82)]:
        intent("acme", "summer", "u1", label, ago)
    step("acme", "summer", "u1", "picked_up", 90)
    step("acme", "summer", "u2", "picked_up", 91)
    step("acme", "summer", "u2", "interested", 92)
    step("acme", "summer", "u2", "voicemail", 93)
    add("acme", "tag_changed", 94, "summer", customer_id="u2", label="vip")
    # acme without a campaign: in "All campaigns" only.
    conv("acme", None, "n1", "call", 40, 100)
    conv("acme", None, "n2", "chat", 8, 110)
    intent("acme", None, "n1", "question", 120)
    # acme usage (tenant-wide).
    usage("acme", "call_minutes", 2.5, 15)
    usage("acme", "call_minutes", 4.25, 800)
    usage("acme", "chat_messages", 3, 25)
    usage("acme", "chat_messages", 1, 26)
    # acme / spring 26-30 h ago: the previous period of "Last 24 hours" (the cards'
    # changes), inside the last 7 days.
    for customer, channel, seconds, ago in [("p1", "call", 50, 1560), ("p2", "chat", 20, 1680),
                                            ("p3", "call", 35, 1800)]:
        conv("acme", "spring", customer, channel, seconds, ago)
    intent("acme", "spring", "p1", "buy", 1600)
    step("acme", "spring", "p1", "picked_up", 1700)
    step("acme", "spring", "p1", "interested", 1650)
    # acme / spring three days ago: only "Last 7 days" (and the custom range) see these.
    conv("acme", "spring", "s1", "call", 200, OLD_MINUTES)
    conv("acme", "spring", "s9", "call", 15, OLD_MINUTES + 3)
    intent("acme", "spring", "s9", "buy", OLD_MINUTES + 4)
    intent("acme", "spring", "s9", "buy", OLD_MINUTES + 5)
    step("acme", "spring", "s9", "picked_up", OLD_MINUTES + 6)
    usage("acme", "call_minutes", 10, OLD_MINUTES + 7)
    # globex / winter: another tenant, other numbers.
    for i, (channel, seconds) in enumerate([("call", 33), ("call", 34), ("call", 35),
                                            ("chat", 1)]):
        conv("globex", "winter", f"g{i}", channel, seconds, 45 + i)
    for ago in range(4):
        intent("globex", "winter", "g1", "refund", 130 + ago)
    for j, label in enumerate(STEPS):
        step("globex", "winter", "g1", label, 140 - j)
    usage("globex", "call_minutes", 7, 150)
    return events


@dataclass
class Expected:
    """What the contract (section 3) says the reports hold, computed from the events."""

    conversations: int = 0
    calls: int = 0
    chats: int = 0
    engaged: int = 0
    duration: float = 0.0
    intents: dict[str, int] = field(default_factory=dict)
    funnel: list[int] = field(default_factory=lambda: [0] * len(STEPS))
    usage: dict[str, float] = field(default_factory=dict)
    campaigns: dict[str, int] = field(default_factory=dict)


def expected(events: list[dict[str, Any]], tenant: str, campaign: str | None,
             from_ms: int, to_ms: int) -> Expected:
    out = Expected()
    mine = [e for e in events if e["tenant_id"] == tenant]
    inside = [e for e in mine if from_ms <= e["occurred_at"] < to_ms]
    conversations = [e for e in inside if e["event_type"] in ("call_ended", "chat_ended")]
    for e in inside:  # tenant-wide: the campaign filter applies to neither
        if e["campaign_id"] is not None:
            out.campaigns[e["campaign_id"]] = sum(
                1 for c in conversations if c["campaign_id"] == e["campaign_id"])
        if e["event_type"] == "usage":
            out.usage[e["category"]] = out.usage.get(e["category"], 0.0) + e["value"]
    for e in inside:
        if campaign is not None and e["campaign_id"] != campaign:
            continue
        if e in conversations:
            out.conversations += 1
            if e["event_type"] == "call_ended":
                out.calls += 1
            else:
                out.chats += 1
            out.duration += e["value"]
            out.engaged += e["value"] >= 30
        elif e["event_type"] == "intent_detected":
            out.intents[e["label"]] = out.intents.get(e["label"], 0) + 1
    # Journeys: (campaign, customer); t1 = earliest first-step event, at any time.
    journeys: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
    for e in mine:
        if e["event_type"] == "funnel_step":
            journeys.setdefault((e["campaign_id"], e["customer_id"]), []).append(e)
    for (journey_campaign, _), steps in journeys.items():
        if campaign is not None and journey_campaign != campaign:
            continue
        firsts = [e["occurred_at"] for e in steps if e["label"] == STEPS[0]]
        if not firsts or not from_ms <= min(firsts) < to_ms:
            continue
        labels = {e["label"] for e in steps}
        for k in range(len(STEPS)):
            if all(s in labels for s in STEPS[: k + 1]):
                out.funnel[k] += 1
    return out


# ---- the stack ----------------------------------------------------------------------


@dataclass
class Stack:
    """A running worker + API holding `events`; `base_url` serves the dashboard."""

    pulse: Pulse
    api: Proc
    base_url: str
    events: list[dict[str, Any]]
    now_ms: int
    stream: list[Event] = field(default_factory=list)
    """`events` as the worker decoded them, for tests/oracle.py."""

    def get(self, path_or_url: str, key: str, params: dict[str, str] | None = None) -> Any:
        """The API's JSON answer, with the key as a bearer token."""
        return self.answer(path_or_url, key, params).json()

    def answer(self, path_or_url: str, key: str,
               params: dict[str, str] | None = None) -> httpx.Response:
        """The API's 200 answer, with the key as a bearer token."""
        url = path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url
        response = httpx.get(url, params=params, timeout=30,
                             headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, f"GET {url} -> {response.status_code}: {response.text}"
        return response

    def expected(self, tenant: str, campaign: str | None, from_ms: int, to_ms: int) -> Expected:
        return expected(self.events, tenant, campaign, from_ms, to_ms)


def _wait_ready(api: Proc, base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not api.alive():
            pytest.fail(f"pulse api exited:\n{api.log()[-3000:]}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(f"GET /readyz not 200 in {timeout} s (last: {last}):\n{api.log()[-3000:]}")


def _wait_for_events(stack: Stack, timeout: float = 90) -> None:
    """Until the API reports every produced event (all tenants, last 8 days)."""
    from_ms = stack.now_ms - 8 * DAY_MS
    to_ms = stack.now_ms - stack.now_ms % HOUR_MS + 2 * HOUR_MS
    params = {"from": iso(from_ms), "to": iso(to_ms)}
    want: dict[str, Any] = {}
    for tenant in ("acme", "globex"):
        exp = stack.expected(tenant, None, from_ms, to_ms)
        want[tenant] = {"conversations": exp.conversations,
                        "intents": sum(exp.intents.values()),
                        "funnel": exp.funnel,
                        "usage": exp.usage}
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while True:
        for tenant in want:
            overview = stack.get("/analytics/overview", ADMIN_KEY, {**params, "tenant": tenant})
            usage = stack.get("/analytics/usage", ADMIN_KEY, {**params, "tenant": tenant})
            got[tenant] = {"conversations": overview["conversations"]["total"],
                           "intents": overview["intents"]["total"],
                           "funnel": [s["customers"] for s in overview["funnel"]],
                           "usage": usage["usage"]}
        if got == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the API did not report the produced events in {timeout} s:\n"
                        f"want {json.dumps(want)}\ngot  {json.dumps(got)}")
        time.sleep(0.3)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + "Z"


@pytest.fixture(scope="package")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("browser-stack")
    pulse = Pulse.on(broker, root)
    try:
        now_ms = time.time_ns() // 1_000_000
        events = known_events(now_ms)
        pulse.ensure_topics()
        pulse.start_worker()
        messages = [(e.get("customer_id", "usage").encode(), json.dumps(e).encode(), None)
                    for e in events]
        assert pulse.produce(messages) == len(events)
        port = free_port()
        api = pulse.start("api", PULSE_API_KEYS=API_KEYS, PULSE_API_PORT=str(port))
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(api, base_url)
        stream = [decode_event(message, now_ms * 1000) for _, message, _ in messages]
        assert all(isinstance(e, Event) for e in stream), stream
        deployment = Stack(pulse, api, base_url, events, now_ms, stream)  # type: ignore[arg-type]
        _wait_for_events(deployment)
        yield deployment
        assert api.alive(), f"pulse api died during the tests:\n{api.log()[-3000:]}"
    finally:
        pulse.stop_all()


# ---- the browser --------------------------------------------------------------------


class Chromium:
    """Launches the system Chromium on first use, inside a test, so that a missing
    browser or Playwright FAILS that test with a clear message (a fixture error would
    report an ERROR instead; skipping is never right)."""

    def __init__(self) -> None:
        self._playwright: Any = None
        self._browser: Any = None
        self._problem: str | None = None

    def get(self) -> Any:
        if self._browser is None and self._problem is None:
            self._problem = self._launch()
        if self._problem is not None:
            pytest.fail(self._problem, pytrace=False)
        return self._browser

    def _launch(self) -> str | None:
        if not os.path.isfile(CHROMIUM) or not os.access(CHROMIUM, os.X_OK):
            return (f"Chromium is not installed at {CHROMIUM}: the browser tests need it. "
                    "Install Debian's package: `apt-get install -y chromium` "
                    "(or point PULSE_TEST_CHROMIUM at a Chromium binary).")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            return ("Playwright for Python is not installed in this environment: "
                    "`pip install 'playwright>=1.44'` (it is in the `test` extra). Do not run "
                    "`playwright install`: the tests drive the system Chromium.")
        try:
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM,
                                                             args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure is the same verdict
            return f"Chromium at {CHROMIUM} did not start under Playwright: {exc}"
        return None

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    yield chromium
    chromium.close()


@dataclass
class Watched:
    """One page and what it did: console errors, page errors, API requests."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # /analytics/* URLs, in order
    headers: list[dict[str, str]] = field(default_factory=list)

    def api_requests(self, path: str, since: int = 0) -> list[tuple[str, dict[str, str]]]:
        """(url, query) of the requests to `/analytics/<path>` from index `since` on."""
        out = []
        for url in self.requests[since:]:
            parts = urlsplit(url)
            if parts.path == f"/analytics/{path}":
                out.append((url, dict(parse_qsl(parts.query))))
        return out

    def last(self, path: str, since: int = 0, **query: str | None) -> tuple[str, dict[str, str]]:
        """The newest request to `/analytics/<path>` whose query has these values (None:
        absent); fails when the page sent none."""
        matching = [(url, q) for url, q in self.api_requests(path, since)
                    if all(q.get(k) == v for k, v in query.items())]
        assert matching, (f"the page sent no /analytics/{path} request with {query}; "
                          f"it sent: {self.requests[since:]}")
        return matching[-1]

    def assert_no_console_errors(self, allowed: Callable[[str], bool] = lambda _: False) -> None:
        unexpected = [e for e in self.console_errors if not allowed(e)]
        assert not unexpected, "the page logged errors:\n" + "\n".join(unexpected)


@pytest.fixture
def open_page(browser: Chromium) -> Iterator[Callable[..., Watched]]:
    """`open_page(width=1280, height=900)`: a fresh context and page, watched."""
    contexts: list[Any] = []

    def open_(width: int = 1280, height: int = 900) -> Watched:
        context = browser.get().new_context(viewport={"width": width, "height": height},
                                      timezone_id=TIMEZONE, locale="en-US")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        watched = Watched(page)

        def on_console(message: Any) -> None:
            if message.type == "error":
                watched.console_errors.append(f"console.error: {message.text} "
                                              f"({message.location.get('url', '')})")

        def on_request(request: Any) -> None:
            if "/analytics/" in request.url:
                watched.requests.append(request.url)
                watched.headers.append(request.headers)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: watched.console_errors.append(f"pageerror: {exc}"))
        page.on("request", on_request)
        return watched

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
