"""The dashboard in a real headless Chromium against a real Pulse stack with known events.

Every number the page shows is compared, as text, with the API's JSON for the very
request the page sent (same key, tenant, campaign, from and to: the page's requests are
recorded and replayed with httpx), formatted as `dashboard/src/format.ts` documents.
The API's numbers are in turn checked against the known events (contract section 3), so
a page that agrees with a wrong API fails too.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from .conftest import (
    ACME_KEY,
    ADMIN_KEY,
    BROWSER_ZONES,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    OLD_MINUTES,
    Stack,
)
from .formats import (
    count_change,
    fmt_count,
    fmt_datetime,
    fmt_number,
    fmt_percent,
    fmt_seconds,
    fmt_span,
    humanize,
    rate_change,
    seconds_change,
)
from .view import (
    VIEW_PATHS,
    check_dropoff,
    check_view,
    fmt_iso,
    goto,
    local_input,
    local_wall,
    ms,
    table_cells,
)

pytestmark = [pytest.mark.browser, pytest.mark.broker]


def test_formats_follow_format_ts() -> None:
    """The Python twins of format.ts agree with the examples format.ts documents."""
    assert fmt_count(1234) == "1234"
    assert fmt_percent(0.4567) == "45.7%"
    assert fmt_seconds(61.25) == "61.3 s"  # a tie: away from zero, unlike Python's round
    assert fmt_seconds(38.0625) == "38.1 s"
    assert fmt_percent(1 / 6) == "16.7%"
    assert fmt_percent(0.0) == "0.0%"
    assert [fmt_number(x) for x in (12.5, 3, 1 / 3, 6.75)] == ["12.5", "3", "0.33", "6.75"]
    assert humanize("picked_up") == "Picked up"
    assert (count_change(12, 10), count_change(3, 0)) == ("+2 (+20.0%)", "+3 (n/a)")
    assert seconds_change(38.25, 40) == "\u22121.8 s (\u22124.4%)"
    assert (rate_change(0.5, 0.25), rate_change(0.5, 0.0)) == ("+25.0 pp", "n/a")
    assert [fmt_span(s) for s in (None, 600, 7440.5)] == ["\u2013", "10 min", "2 h 4 min"]
    assert fmt_datetime("2026-11-30T01:30:00Z", "Asia/Kolkata") == "2026-11-30 07:00"


# ---- the tests ---------------------------------------------------------------------------


def test_tenant_key_default_view_equals_api(open_page, stack: Stack, artifacts: Path) -> None:
    watched = open_page()
    page = watched.page
    load_ms = goto(watched, stack, ACME_KEY)
    timing = page.evaluate("""() => {
        const n = performance.getEntriesByType("navigation")[0];
        return {response: n.responseEnd, dom: n.domContentLoadedEventEnd, load: n.loadEventEnd};
    }""")
    line = (f"dashboard load time: {load_ms:.0f} ms from navigation start to the overview "
            f"cards showing numbers (HTML received at {timing['response']:.0f} ms, "
            f"DOMContentLoaded at {timing['dom']:.0f} ms, load at {timing['load']:.0f} ms)")
    print(f"\n{line}")
    (artifacts / "load_time.txt").write_text(line + "\n")
    assert load_ms > 0

    shown = check_view(stack, watched, ACME_KEY, "acme", None)
    # The default preset is "Last 24 hours" (state.ts): the 24 UTC hours ending with the
    # current one, hourly buckets.
    frm, to = ms(shown["from"]), ms(shown["to"])
    # In the browser's zone, which is half an hour off UTC: local hours, not UTC ones.
    assert shown["tz"] in BROWSER_ZONES and f"tz={quote(shown['tz'], safe='')}" in page.url
    assert to - frm == DAY_MS and local_wall(to, shown["tz"])[3:] == (0, 0)
    assert to - HOUR_MS <= time.time() * 1000 < to
    assert shown["requests"]["timeseries"]["interval"] == "hour"
    assert len(table_cells(page, "timeseries")) == 24
    assert shown["cards"] == {"conversations": "12", "calls": "8", "chats": "4",
                              "avg-duration": "40.3 s", "engagement-rate": "58.3%",
                              "intent-rate": "83.3%"}
    assert shown["funnel"] == ["6", "3", "1"]
    # A tenant key: no tenant picker, no tenant parameter, the key out of the address bar.
    assert page.get_by_test_id("tenant-picker").count() == 0
    assert all("tenant=" not in u for u in watched.requests)
    assert "key=" not in page.url and "range=24h" in page.url, page.url
    assert page.evaluate("sessionStorage.getItem('pulse.apiKey')") == ACME_KEY
    page.wait_for_timeout(500)
    watched.assert_no_console_errors()


def test_campaign_and_range_change_requests_and_numbers(open_page, stack: Stack) -> None:
    watched = open_page()
    page = watched.page
    goto(watched, stack, ACME_KEY)
    everything = check_view(stack, watched, ACME_KEY, "acme", None)

    # One campaign: the overview comes from /analytics/campaign/spring, the series carry
    # campaign=spring, the range stays; usage and campaigns stay tenant-wide.
    since = len(watched.requests)
    page.get_by_test_id("campaign-picker").select_option("spring")
    spring = check_view(stack, watched, ACME_KEY, "acme", "spring", since)
    assert (spring["from"], spring["to"]) == (everything["from"], everything["to"])
    assert spring["requests"]["timeseries"]["campaign"] == "spring"
    assert "campaign" not in everything["requests"]["timeseries"]
    assert spring["cards"] != everything["cards"]
    assert spring["funnel"] != everything["funnel"]
    assert spring["intents"] != everything["intents"]
    assert spring["cards"]["conversations"] == "8"
    assert spring["cards"]["avg-duration"] == "38.3 s"  # 38.25: a tie, away from zero
    assert spring["funnel"] == ["4", "2", "1"]
    assert "campaign=spring" in page.url

    # Last 7 days: same campaign, a range 7 days long ending where it ended, and the
    # events of three days ago now count.
    since = len(watched.requests)
    page.get_by_test_id("range-preset").select_option("7d")
    week = check_view(stack, watched, ACME_KEY, "acme", "spring", since,
                      where=lambda q: ms(q["to"]) - ms(q["from"]) == 7 * DAY_MS)
    assert ms(week["to"]) - ms(week["from"]) == 7 * DAY_MS
    assert week["from"] != spring["from"]
    assert week["requests"]["timeseries"]["interval"] == "hour"
    assert week["cards"] != spring["cards"]
    assert week["cards"]["conversations"] == "13"
    assert week["usage"] != spring["usage"]  # usage: tenant-wide, but the range counts
    assert week["funnel"] == ["6", "3", "1"]
    assert "range=7d" in page.url

    # A custom range around the old events only (not aligned to hours: the lake answers).
    old_ms = stack.now_ms - OLD_MINUTES * MINUTE_MS
    frm_ms = old_ms - old_ms % MINUTE_MS - 97 * MINUTE_MS
    to_ms = old_ms - old_ms % MINUTE_MS + 43 * MINUTE_MS
    page.get_by_test_id("range-preset").select_option("custom")
    # "Custom range" starts from the range shown, prefilled as wall times of the zone.
    tz = week["tz"]
    assert page.get_by_test_id("range-from").input_value() == local_input(ms(week["from"]), tz)
    assert page.get_by_test_id("range-to").input_value() == local_input(ms(week["to"]), tz)
    since = len(watched.requests)
    page.get_by_test_id("range-from").fill(local_input(frm_ms, tz))
    page.get_by_test_id("range-to").fill(local_input(to_ms, tz))
    page.get_by_test_id("range-apply").click()
    custom = check_view(stack, watched, ACME_KEY, "acme", "spring", since,
                        where=lambda q: q["from"] == fmt_iso(frm_ms))
    assert (custom["from"], custom["to"]) == (fmt_iso(frm_ms), fmt_iso(to_ms))
    assert custom["cards"]["conversations"] == "2"
    assert custom["cards"] != week["cards"]

    # Back to all campaigns: the campaign parameter is gone again.
    since = len(watched.requests)
    page.get_by_test_id("campaign-picker").select_option("")
    back = check_view(stack, watched, ACME_KEY, "acme", None, since)
    assert "campaign" not in back["requests"]["timeseries"]
    assert (back["from"], back["to"]) == (custom["from"], custom["to"])

    # Last 30 days: daily buckets over the 30 whole UTC days ending with today.
    since = len(watched.requests)
    page.get_by_test_id("range-preset").select_option("30d")
    month = check_view(stack, watched, ACME_KEY, "acme", None, since, interval="day",
                       where=lambda q: ms(q["to"]) - ms(q["from"]) == 30 * DAY_MS)
    assert local_wall(month["to"], tz)[2:] == (0, 0, 0)  # local midnight
    assert ms(month["to"]) - DAY_MS <= time.time() * 1000 < ms(month["to"])
    assert page.get_by_test_id("interval-day").is_checked()
    assert len(table_cells(page, "timeseries")) == 30
    assert month["cards"]["conversations"] == "17"

    # Hourly over the same preset: the 30 days end with the current hour instead.
    def current_hour_end(q: dict[str, str]) -> bool:
        to_ms = ms(q["to"])
        return (to_ms - ms(q["from"]) == 30 * DAY_MS
                and to_ms - HOUR_MS <= time.time() * 1000 < to_ms)

    since = len(watched.requests)
    page.get_by_test_id("interval-hour").check()
    hourly = check_view(stack, watched, ACME_KEY, "acme", None, since, interval="hour",
                        where=current_hour_end)
    assert len(table_cells(page, "timeseries")) == 30 * 24
    assert hourly["cards"] == month["cards"]
    assert "interval=hour" in page.url and "range=30d" in page.url
    watched.assert_no_console_errors()


def test_invalid_key_shows_auth_required(open_page, stack: Stack) -> None:
    from playwright.sync_api import expect

    watched = open_page()
    page = watched.page
    page.goto(f"{stack.base_url}/?key=not-a-valid-key")
    prompt = page.get_by_test_id("auth-required")
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text("The API did not accept the key: this API key is not valid")
    assert page.get_by_test_id("card-conversations").count() == 0
    assert "key=" not in page.url, page.url
    # Only /me was asked, with the bad key, and it got a 401.
    assert [urlsplit(u).path for u in watched.requests] == ["/analytics/me"], watched.requests
    assert watched.headers[0].get("authorization") == "Bearer not-a-valid-key"
    page.wait_for_timeout(500)
    watched.assert_no_console_errors(
        allowed=lambda e: "Failed to load resource: the server responded with a status of 401"
        in e)
    assert watched.console_errors, "expected the browser's own 401 resource error"

    # A valid key typed into the prompt opens the dashboard.
    since = len(watched.requests)
    page.get_by_role("textbox", name="API key").fill(ACME_KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(prompt).to_have_count(0)
    check_view(stack, watched, ACME_KEY, "acme", None, since)


def test_admin_key_tenant_picker_switches_tenant(open_page, stack: Stack) -> None:
    from playwright.sync_api import expect

    watched = open_page()
    page = watched.page
    goto(watched, stack, ADMIN_KEY)
    picker = page.get_by_test_id("tenant-picker")
    expect(picker).to_be_visible()
    tenants = stack.get("/analytics/tenants", ADMIN_KEY)["tenants"]
    assert tenants == ["acme", "globex"]
    assert [o.strip() for o in picker.locator("option").all_inner_texts()] == tenants
    assert picker.input_value() == "acme"  # the first tenant by default
    assert "tenant=acme" in page.url
    acme = check_view(stack, watched, ADMIN_KEY, "acme", None, admin=True)
    assert all(q["tenant"] == "acme" for p in VIEW_PATHS
               for _, q in watched.api_requests(p))

    since = len(watched.requests)
    picker.select_option("globex")
    globex = check_view(stack, watched, ADMIN_KEY, "globex", None, since, admin=True)
    assert all(q.get("tenant") == "globex" for p in VIEW_PATHS
               for _, q in watched.api_requests(p, since))
    assert globex["cards"] != acme["cards"]
    assert globex["cards"]["conversations"] == "4"
    assert globex["funnel"] == ["1", "1", "1"]
    assert globex["usage"] == [["call_minutes", "7"]]
    assert "tenant=globex" in page.url
    options = page.get_by_test_id("campaign-picker").locator("option").all_inner_texts()
    assert [o.strip() for o in options] == ["All campaigns", "winter (4 conversations)"]
    watched.assert_no_console_errors()


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
def test_main_view_screenshots_and_no_horizontal_scroll(open_page, stack: Stack,
                                                        artifacts: Path, width: int,
                                                        height: int) -> None:
    watched = open_page(width, height)
    page = watched.page
    goto(watched, stack, ACME_KEY)
    shown = check_view(stack, watched, ACME_KEY, "acme", None)
    # check_view showed the tables; the main view shows the charts.
    for name in ("funnel", "intents", "timeseries"):
        page.get_by_test_id(f"table-toggle-{name}").click()
        assert page.get_by_test_id(f"table-toggle-{name}").get_attribute("aria-pressed") == "false"
    page.locator(".recharts-surface").first.wait_for()
    assert page.locator(".recharts-surface").count() >= 4  # with the breakdown's
    # The drop-off list in the picture too, opened from the keyboard.
    since = len(watched.requests)
    page.get_by_role("button", name=re.compile("dropped off")).first.press("Enter")
    rows = check_dropoff(stack, watched, ACME_KEY, "acme", since, shown["from"], 2)
    assert rows and page.get_by_test_id("dropoff-table").is_visible()
    page.evaluate("document.activeElement?.blur()")  # no focus ring in the picture
    page.wait_for_timeout(300)  # let the responsive charts settle to their width
    path = artifacts / f"dashboard-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    print(f"\nscreenshot {path} (scrollWidth {scroll_width} at {width} px)")
    assert scroll_width <= width, (
        f"the page scrolls horizontally at {width} px: scrollWidth is {scroll_width}; widest "
        "elements: " + str(page.evaluate(f"""() => [...document.querySelectorAll('body *')]
            .map(e => [e.tagName + '.' + e.className, Math.round(e.getBoundingClientRect().right)])
            .filter(([, r]) => r > {width}).slice(0, 8)""")))
    watched.assert_no_console_errors()
