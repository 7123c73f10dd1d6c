"""The insight panels in Chromium: each shows the API's numbers, and a link reproduces a view.

Cards' changes against the previous period, the funnel's order and window controls and
time to convert, the drop-off list and its CSV, the weekday x hour heatmap, the
breakdown by channel, campaign or a typed metadata key, and the time zone that cuts the
buckets. As in test_dashboard.py, every number is compared with the API's answer to the
very request the page sent, and that answer with tests/oracle.py over the known events.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest

from .conftest import ACME_KEY, BROWSER_ZONES, DAY_MS, HOUR_MS, MINUTE_MS, Stack, Watched
from .view import (
    check_breakdown,
    check_dropoff,
    check_heatmap,
    check_view,
    goto,
    local_input,
    local_wall,
    ms,
    show_tables,
    text,
    wait_for_request,
)

pytestmark = [pytest.mark.browser, pytest.mark.broker]

NEW_YORK = "America/New_York"


def test_insight_panels_show_the_api_numbers(open_page, stack: Stack) -> None:
    from playwright.sync_api import expect

    watched = open_page()
    page = watched.page
    goto(watched, stack, ACME_KEY)
    # Cards with their changes, funnel with time to convert and drop-off counts.
    shown = check_view(stack, watched, ACME_KEY, "acme", None)
    assert shown["tz"] in BROWSER_ZONES
    assert shown["changes"]["conversations"] == "+9 (+300.0%)"  # 12 now, 3 the day before
    frm = shown["from"]
    check_heatmap(stack, watched, ACME_KEY, "acme", 0, frm)
    assert check_breakdown(stack, watched, ACME_KEY, "acme", 0, frm, "channel") != []

    # The drop-off list at step 2, from the funnel's button; then the whole list as CSV.
    since = len(watched.requests)
    page.get_by_test_id("dropoff-2").click()
    assert page.get_by_test_id("dropoff-2").get_attribute("aria-expanded") == "true"
    dropped = check_dropoff(stack, watched, ACME_KEY, "acme", since, frm, 2)
    assert len(dropped) == int(text(page, "dropoff-2").split()[0]) > 0
    assert "drop=2" in page.url
    since = len(watched.requests)
    with page.expect_download() as download:
        page.get_by_test_id("dropoff-csv").click()
    url, query = wait_for_request(watched, "funnel/customers", since, format="csv")
    assert query == {"from": frm, "to": shown["to"], "order": "any", "step": "2",
                     "outcome": "dropped", "format": "csv"}, query
    assert watched.headers[-1]["authorization"] == f"Bearer {ACME_KEY}"
    csv = stack.answer(url, ACME_KEY)
    assert download.value.suggested_filename == "customers-step2-dropped.csv"
    saved = download.value.path().read_bytes()
    assert saved == csv.content and len(saved.splitlines()) == len(dropped) + 1
    check_paging(stack, watched, frm, shown["to"], dropped)

    # In sequence: u2 had "interested" before "picked up", so fewer reach step 2. Then a
    # window of 15 minutes: s1 took 20 to qualify. The list follows the options.
    since = len(watched.requests)
    page.get_by_test_id("funnel-order").select_option("sequence")
    ordered = check_view(stack, watched, ACME_KEY, "acme", None, since, order="sequence")
    assert ordered["funnel"] != shown["funnel"]
    check_dropoff(stack, watched, ACME_KEY, "acme", since, frm, 2, "sequence")
    since = len(watched.requests)
    page.get_by_test_id("funnel-window").fill("15")
    page.get_by_test_id("funnel-window-unit").select_option("min")
    page.get_by_test_id("funnel-apply").click()
    windowed = check_view(stack, watched, ACME_KEY, "acme", None, since, order="sequence",
                          window=900)
    assert windowed["funnel"] != ordered["funnel"]
    check_dropoff(stack, watched, ACME_KEY, "acme", since, frm, 2, "sequence", 900)
    assert "order=sequence" in page.url and "window=900" in page.url

    # A metadata key typed into the breakdown: strings, numbers, booleans, and "not set".
    since = len(watched.requests)
    page.get_by_test_id("breakdown-by").select_option("metadata")
    page.get_by_test_id("breakdown-key").fill("agent")
    page.get_by_test_id("breakdown-key").press("Enter")
    rows = check_breakdown(stack, watched, ACME_KEY, "acme", since, frm, "metadata.agent")
    assert {r[0] for r in rows} >= {"ava", "bo", "7", "2.5", "true", "(not set)"}
    since = len(watched.requests)
    page.get_by_test_id("breakdown-by").select_option("campaign")
    check_breakdown(stack, watched, ACME_KEY, "acme", since, frm, "campaign")
    expect(page.get_by_test_id("breakdown-key")).to_have_count(0)
    watched.assert_no_console_errors()


def test_time_zone_cuts_the_buckets_and_a_link_reproduces_the_view(open_page,
                                                                   stack: Stack) -> None:
    from playwright.sync_api import expect

    watched = open_page()
    page = watched.page
    goto(watched, stack, ACME_KEY)
    # The browser's zone (the other test checks this view whole).
    kolkata = wait_for_request(watched, "overview", 0)[1]
    kolkata_cells = check_heatmap(stack, watched, ACME_KEY, "acme", 0, kolkata["from"])

    # New York: whole hours there are half hours in Kolkata, so the range, the hourly
    # buckets and the heatmap's hours all move.
    since = len(watched.requests)
    page.get_by_test_id("tz-picker").select_option(NEW_YORK)
    ny = check_view(stack, watched, ACME_KEY, "acme", None, since,
                    where=lambda q: q["from"] != kolkata["from"])
    assert ny["tz"] == NEW_YORK and f"tz={NEW_YORK.replace('/', '%2F')}" in page.url
    assert local_wall(ny["to"], NEW_YORK)[3:] == (0, 0)
    assert local_wall(kolkata["to"], NEW_YORK)[3:] == (30, 0)
    ny_cells = check_heatmap(stack, watched, ACME_KEY, "acme", since, ny["from"])
    assert ny_cells != kolkata_cells

    # Daily buckets are New York's days: one row per local date the range touches.
    since = len(watched.requests)
    page.get_by_test_id("interval-day").check()
    url, daily = wait_for_request(watched, "timeseries", since, interval="day", tz=NEW_YORK,
                                  metric="conversations", **{"from": ny["from"]})
    points = stack.get(url, ACME_KEY)["points"]
    days = {local_date(ms(ny["from"]), NEW_YORK), local_date(ms(ny["to"]) - 1, NEW_YORK)}
    assert [p["t"][:16] for p in points] == [f"{d}T00:00" for d in sorted(days)], points
    expect(page.locator('[data-panel="timeseries"] tbody th')).to_have_text(
        [f"{d} 00:00" for d in sorted(days)])

    # Every other choice, with a custom range of New York wall times (a link to a preset
    # would show a later range once the hour turns), then the link in another browser.
    page.get_by_test_id("campaign-picker").select_option("spring")
    page.get_by_test_id("range-preset").select_option("custom")
    start = ms(ny["to"]) - 3 * DAY_MS  # a whole New York hour, ~3 days before now
    end = ms(ny["to"]) + HOUR_MS + 30 * MINUTE_MS  # and a half hour, later today
    page.get_by_test_id("range-from").fill(local_input(start, NEW_YORK))
    page.get_by_test_id("range-to").fill(local_input(end, NEW_YORK))
    page.get_by_test_id("range-apply").click()
    page.get_by_test_id("interval-hour").check()
    page.get_by_test_id("funnel-order").select_option("sequence")
    page.get_by_test_id("funnel-window").fill("2")
    page.get_by_test_id("funnel-window-unit").select_option("d")
    page.get_by_test_id("funnel-apply").click()
    page.get_by_test_id("breakdown-by").select_option("campaign")
    page.get_by_test_id("heat-show-engagement").check()
    page.get_by_test_id("dropoff-2").click()
    shared = check_shared_view(stack, watched)
    assert (ms(shared["from"]), ms(shared["to"])) == (start, end)
    link = page.url
    assert "key=" not in link and "range=custom" in link
    shown_before = page_texts(page)
    queries_before = last_queries(watched)

    # The link in a fresh browser (its own tab storage), on a phone: the same requests, and
    # the same texts, number for number (with the same panels shown as tables).
    other = open_page(390, 844)
    goto(other, stack, ACME_KEY, link)
    show_tables(other.page, "funnel", "intents", "timeseries", "breakdown")
    deadline = time.monotonic() + 15
    while page_texts(other.page) != shown_before and time.monotonic() < deadline:
        other.page.wait_for_timeout(100)
    assert page_texts(other.page) == shown_before
    queries = last_queries(other)  # the first page also asked for the views before
    assert queries == {path: queries_before[path] for path in queries}
    assert len(queries) == 11, queries  # me, and the ten requests of one view
    assert other.page.url == link
    watched.assert_no_console_errors()
    other.assert_no_console_errors()


def check_paging(stack: Stack, watched: Watched, frm: str, to: str,
                 dropped: list[list[str]]) -> None:
    """The drop-off list a page at a time: the page asks for 50, the API is asked for 2
    (the request is rewritten on its way, the answers are the API's own), and "Show more"
    follows next_cursor to the same rows the whole list had."""
    from playwright.sync_api import expect

    assert len(dropped) == 3, dropped  # so that pages of 2 make two pages
    page = watched.page
    page.get_by_test_id("dropoff-close").click()
    page.route("**/analytics/funnel/customers?*", lambda route: route.continue_(
        url=route.request.url.replace("limit=50", "limit=2")))
    since = len(watched.requests)
    page.get_by_test_id("dropoff-2").click()
    table = page.locator('[data-testid="dropoff-table"] tbody tr')
    expect(table).to_have_count(2)
    page.get_by_test_id("dropoff-more").click()
    expect(table).to_have_count(3)
    expect(page.get_by_test_id("dropoff-more")).to_have_count(0)
    pages = watched.api_requests("funnel/customers", since)
    assert [("cursor" in q, q["limit"]) for _, q in pages] == [(False, "50"), (True, "50")]
    assert all(q["from"] == frm and q["to"] == to for _, q in pages), pages
    assert table.evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))") == dropped
    page.unroute("**/analytics/funnel/customers?*")


def check_shared_view(stack: Stack, watched: Watched) -> dict[str, Any]:
    """The view the second test builds: spring, sequence, a 2-day window, by campaign,
    engagement rates in the heatmap, the drop-off list at step 2."""
    shown = check_view(stack, watched, ACME_KEY, "acme", "spring", 0, interval="hour",
                       order="sequence", window=172800)
    frm = shown["from"]
    check_heatmap(stack, watched, ACME_KEY, "acme", 0, frm, "engagement")
    check_breakdown(stack, watched, ACME_KEY, "acme", 0, frm, "campaign")
    check_dropoff(stack, watched, ACME_KEY, "acme", 0, frm, 2, "sequence", 172800)
    return shown


def local_date(ms_: int, tz: str) -> str:
    return datetime.fromtimestamp(ms_ / 1000, ZoneInfo(tz)).date().isoformat()


def page_texts(page: Any) -> dict[str, str]:
    """Every element's text that carries a test id, and every control's value (but the
    watermark's "N s behind", which ticks)."""
    return page.evaluate("""() => Object.fromEntries([
        ...[...document.querySelectorAll('[data-testid]')].map(e =>
            [e.dataset.testid, 'value' in e && e.tagName !== 'BUTTON'
                ? String(e.type === 'radio' ? e.checked : e.value) : e.textContent.trim()]),
    ].filter(([id]) => id !== 'as-of'))""")


def last_queries(watched: Watched) -> dict[str, dict[str, str]]:
    """The newest query the page sent to each path (per metric for the time series)."""
    out = {}
    for url in watched.requests:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        out[f"{parts.path} {query.get('metric', '')}"] = query
    return out
