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
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from .conftest import (
    ACME_KEY,
    ADMIN_KEY,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    OLD_MINUTES,
    STEPS,
    Stack,
    Watched,
)

pytestmark = [pytest.mark.browser, pytest.mark.broker]

VIEW_PATHS = ("overview", "campaigns", "usage", "timeseries")
SERIES = ("conversations", "engaged", "intents")  # dashboard.ts SERIES, in column order
CARDS = ("conversations", "calls", "chats", "avg-duration", "engagement-rate", "intent-rate")

# Records when the overview cards first show a number, relative to navigation start.
CARDS_SHOWN_AT = """
(() => {
  const shown = () => {
    const el = document.querySelector('[data-testid="card-conversations"]');
    return el !== null && /^\\d+$/.test((el.textContent || "").trim());
  };
  new MutationObserver((_, observer) => {
    if (window.__pulseCardsShownAt === undefined && shown()) {
      window.__pulseCardsShownAt = performance.now();
      observer.disconnect();
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
})();
"""


# ---- format.ts, in Python --------------------------------------------------------------


def to_fixed_1(x: float) -> str:
    """JS `x.toFixed(1)`: the double's exact value rounded, ties to the larger digit."""
    return str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def js_round(x: float) -> int:
    """JS `Math.round`: nearest integer, ties towards +infinity."""
    down = int(Decimal(x).to_integral_value(rounding="ROUND_FLOOR"))
    return down + 1 if Decimal(x) - down >= Decimal("0.5") else down


def js_string(x: float) -> str:
    """JS `String(number)` for the plain range the dashboard shows."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def fmt_count(n: float) -> str:
    return str(js_round(n))


def fmt_percent(ratio: float) -> str:
    return f"{to_fixed_1(ratio * 100)}%"


def fmt_seconds(s: float) -> str:
    return f"{to_fixed_1(s)} s"


def fmt_number(x: float) -> str:
    return js_string(js_round(x * 100) / 100)


def humanize(name: str) -> str:
    words = re.sub(r"[_-]+", " ", name).strip()
    return words[:1].upper() + words[1:]


def fmt_utc_datetime(value: str | int) -> str:
    d = (datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int)
         else datetime.fromisoformat(value.replace("Z", "+00:00")))
    return d.strftime("%Y-%m-%d %H:%M UTC")


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


# ---- reading the page ------------------------------------------------------------------


def ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def text(page: Any, testid: str) -> str:
    return page.get_by_test_id(testid).inner_text().strip()


def show_tables(page: Any, *names: str) -> None:
    """Switch these panels to "Show as table" (the choice is kept per tab)."""
    for name in names:
        toggle = page.get_by_test_id(f"table-toggle-{name}")
        if toggle.get_attribute("aria-pressed") != "true":
            toggle.click()
        assert toggle.get_attribute("aria-pressed") == "true"


def table_cells(page: Any, name: str, part: str = "tbody") -> list[list[str]]:
    panel = page.locator("section.panel").filter(has=page.get_by_test_id(f"table-toggle-{name}"))
    return panel.locator(f"table {part} tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")


def usage_cells(page: Any) -> list[list[str]]:
    panel = page.locator("section.panel").filter(has=page.locator("#usage-title"))
    return panel.locator("table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")


def card_sub(page: Any, card: str) -> str:
    return page.locator("li.card").filter(has=page.get_by_test_id(f"card-{card}")) \
        .locator(".card-sub").inner_text().strip()


def wait_for_request(watched: Watched, path: str, since: int, timeout: float = 20,
                     where: Callable[[dict[str, str]], bool] = lambda _: True,
                     **query: str | None) -> tuple[str, dict[str, str]]:
    """The newest request to `/analytics/<path>` since `since` with this query (and
    `where(query)`), waiting for the page to send it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [(u, q) for u, q in watched.api_requests(path, since)
                 if where(q) and all(q.get(k) == v for k, v in query.items())]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"the page sent no /analytics/{path} request with {query} "
                                 f"in {timeout} s; it sent: {watched.requests[since:]}")
        watched.page.wait_for_timeout(50)


# ---- one view: page == API == the known events ---------------------------------------------


def check_view(stack: Stack, watched: Watched, key: str, tenant: str,
               campaign: str | None, since: int = 0, admin: bool = False,
               where: Callable[[dict[str, str]], bool] = lambda _: True,
               interval: str | None = None) -> dict[str, Any]:
    """Waits for the view's requests (sent after index `since`; `where` tells the view's
    overview request from a live refresh of the previous view), then compares everything
    the page shows with the API's answers to those requests; returns what it showed."""
    from playwright.sync_api import expect

    page = watched.page
    tenant_param = tenant if admin else None
    overview_path = f"campaign/{quote(campaign, safe='')}" if campaign else "overview"
    url, query = wait_for_request(watched, overview_path, since, where=where,
                                  tenant=tenant_param)
    assert set(query) == {"from", "to"} | ({"tenant"} if admin else set()), url
    frm, to = query["from"], query["to"]

    # The view's requests: one per part, all for the same tenant, campaign and range.
    for path in VIEW_PATHS[1:3]:
        _, q = wait_for_request(watched, path, since, tenant=tenant_param, **{"from": frm})
        assert q == query, (path, q, query)  # no campaign parameter: tenant-wide
    series_urls = {}
    for metric in SERIES:
        s_url, q = wait_for_request(watched, "timeseries", since, metric=metric,
                                    tenant=tenant_param, campaign=campaign, **{"from": frm},
                                    **({"interval": interval} if interval else {}))
        assert q["to"] == to, q
        series_urls[metric] = s_url
    for headers in watched.headers[since:]:
        assert headers.get("authorization") == f"Bearer {key}", headers
    assert all("key=" not in u for u in watched.requests[since:]), watched.requests[since:]

    # The API's answers to exactly those requests.
    overview = stack.get(url, key)
    assert (overview["tenant_id"], overview["campaign_id"]) == (tenant, campaign), overview
    assert (ms(overview["from"]), ms(overview["to"])) == (ms(frm), ms(to)), overview
    usage_url = watched.last("usage", since, tenant=tenant_param, **{"from": frm})[0]
    usage = stack.get(usage_url, key)["usage"]
    campaigns_url = watched.last("campaigns", since, tenant=tenant_param, **{"from": frm})[0]
    campaigns = stack.get(campaigns_url, key)["campaigns"]
    series = {m: stack.get(u, key) for m, u in series_urls.items()}
    intents_list = stack.get("/analytics/intents", key, {
        k: v for k, v in {"from": frm, "to": to, "campaign": campaign,
                          "tenant": tenant_param}.items() if v is not None})

    # ... agree with the known events.
    exp = stack.expected(tenant, campaign, ms(frm), ms(to))
    conv, eng, ints = overview["conversations"], overview["engagement"], overview["intents"]
    assert (conv["total"], conv["calls"], conv["chats"]) == \
        (exp.conversations, exp.calls, exp.chats), (overview, exp)
    assert (eng["engaged"], eng["total_duration_s"]) == (exp.engaged, exp.duration), overview
    assert {k: v["count"] for k, v in ints["by_label"].items()} == exp.intents, overview
    assert [s["customers"] for s in overview["funnel"]] == exp.funnel, overview
    assert [s["step"] for s in overview["funnel"]] == list(STEPS), overview
    assert usage == exp.usage, usage
    assert {c["campaign_id"]: c["conversations"] for c in campaigns} == exp.campaigns, campaigns
    for metric in SERIES:
        assert sum(p["value"] for p in series[metric]["points"]) == {
            "conversations": exp.conversations, "engaged": exp.engaged,
            "intents": sum(exp.intents.values())}[metric], series[metric]

    # The overview cards (retrying until the view's data is on the page).
    shown_cards = {
        "conversations": fmt_count(conv["total"]),
        "calls": fmt_count(conv["calls"]),
        "chats": fmt_count(conv["chats"]),
        "avg-duration": fmt_seconds(eng["avg_duration_s"]),
        "engagement-rate": fmt_percent(eng["engagement_rate"]),
        "intent-rate": fmt_percent(ints["intent_rate"]),
    }
    for card, value in shown_cards.items():
        expect(page.get_by_test_id(f"card-{card}")).to_have_text(value)
    assert card_sub(page, "avg-duration") == f"{fmt_seconds(eng['total_duration_s'])} in total"
    assert card_sub(page, "engagement-rate") == f"{fmt_count(eng['engaged'])} engaged"
    assert card_sub(page, "intent-rate") == f"{fmt_count(ints['total'])} intents"

    # The range the page says it shows is the one it asked for, in UTC.
    expect(page.locator(".live-text")).to_contain_text(
        f"{fmt_utc_datetime(frm)} to {fmt_utc_datetime(to)}")
    assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").inner_text()

    # The funnel: the step summary, then the table.
    funnel = overview["funnel"]
    for i, s in enumerate(funnel):
        assert text(page, f"funnel-step-{s['step']}") == fmt_count(s["customers"]), s
        item = page.locator("ol.funnel-steps li").nth(i)
        assert item.inner_text().split("\n")[0].strip() == humanize(s["step"])
        assert item.locator(".muted").inner_text().strip() == (
            "entered" if i == 0 else f"{fmt_percent(s['conversion_from_previous'])} of previous")
    show_tables(page, "funnel", "intents", "timeseries")
    assert table_cells(page, "funnel") == [
        [humanize(s["step"]), fmt_count(s["customers"]), fmt_percent(s["conversion_from_previous"]),
         fmt_percent(s["conversion_from_start"])] for s in funnel]

    # The intents, as a table: the order of /analytics/intents, counts and shares.
    by_label = ints["by_label"]
    assert [i["label"] for i in intents_list["intents"]] == sorted(
        by_label, key=lambda label: (-by_label[label]["count"], label)), intents_list
    intent_rows = [[i["label"], fmt_count(i["count"]), fmt_percent(i["share"])]
                   for i in intents_list["intents"]]
    assert intent_rows == [[label, fmt_count(v["count"]), fmt_percent(v["share"])]
                           for label, v in sorted(by_label.items(),
                                                  key=lambda kv: (-kv[1]["count"], kv[0]))]
    assert table_cells(page, "intents") == (intent_rows or
                                            [["No intents detected in this range."]])
    for label, v in by_label.items():
        assert text(page, f"intent-{label}") == fmt_count(v["count"])
    assert table_cells(page, "intents", "tfoot") == [
        ["Total", fmt_count(ints["total"]), "100.0%" if ints["total"] > 0 else ""]]

    # The time series, as a table: one row per bucket, the three metrics.
    points = {m: series[m]["points"] for m in SERIES}
    assert [p["t"] for p in points["conversations"]] == [p["t"] for p in points["intents"]]
    assert table_cells(page, "timeseries") == [
        [fmt_utc_datetime(p["t"])] + [fmt_count(points[m][i]["value"]) for m in SERIES]
        for i, p in enumerate(points["conversations"])]

    # Usage (tenant-wide) and the campaign picker's choices.
    assert usage_cells(page) == [[c, fmt_number(v)] for c, v in sorted(usage.items())]
    for category, total in usage.items():
        assert text(page, f"usage-{category}") == fmt_number(total)
    options = page.get_by_test_id("campaign-picker").locator("option").all_inner_texts()
    listed = {c["campaign_id"]: c["conversations"] for c in campaigns}
    if campaign and campaign not in listed:
        listed[campaign] = None
    assert [o.strip() for o in options] == ["All campaigns"] + [
        c if listed[c] is None else f"{c} ({listed[c]} conversations)" for c in sorted(listed)]
    assert page.get_by_test_id("campaign-picker").input_value() == (campaign or "")

    return {"from": frm, "to": to, "cards": shown_cards, "query": query,
            "funnel": [text(page, f"funnel-step-{s}") for s in STEPS],
            "intents": table_cells(page, "intents"), "usage": usage_cells(page),
            "requests": {p: watched.last(p, since, tenant=tenant_param)[1] for p in
                         ("campaigns", "usage")} | {
                overview_path: query,
                "timeseries": dict(parse_qsl(urlsplit(series_urls["conversations"]).query))}}


def goto(watched: Watched, stack: Stack, key: str) -> float:
    """Opens the dashboard with `?key=` (as `pulse api` prints it); returns the ms from
    navigation start to the overview cards showing numbers."""
    page = watched.page
    page.add_init_script(CARDS_SHOWN_AT)
    page.goto(f"{stack.base_url}/?key={key}")
    page.get_by_test_id("card-conversations").wait_for()
    page.wait_for_function("window.__pulseCardsShownAt !== undefined")
    return page.evaluate("window.__pulseCardsShownAt")


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
    assert to - frm == DAY_MS and to % HOUR_MS == 0 and to - HOUR_MS <= time.time() * 1000 < to
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
    assert week["cards"]["conversations"] == "10"
    assert week["usage"] != spring["usage"]  # usage: tenant-wide, but the range counts
    assert week["funnel"] == ["5", "2", "1"]
    assert "range=7d" in page.url

    # A custom range around the old events only (not aligned to hours: the lake answers).
    old_ms = stack.now_ms - OLD_MINUTES * MINUTE_MS
    frm_ms = old_ms - old_ms % MINUTE_MS - 97 * MINUTE_MS
    to_ms = old_ms - old_ms % MINUTE_MS + 43 * MINUTE_MS
    page.get_by_test_id("range-preset").select_option("custom")
    # "Custom range" starts from the range shown, prefilled in UTC.
    assert page.get_by_test_id("range-from").input_value() == week["from"][:16]
    assert page.get_by_test_id("range-to").input_value() == week["to"][:16]
    since = len(watched.requests)
    page.get_by_test_id("range-from").fill(fmt_iso(frm_ms)[:16])
    page.get_by_test_id("range-to").fill(fmt_iso(to_ms)[:16])
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
    assert ms(month["to"]) % DAY_MS == 0
    assert ms(month["to"]) - DAY_MS <= time.time() * 1000 < ms(month["to"])
    assert page.get_by_test_id("interval-day").is_checked()
    assert len(table_cells(page, "timeseries")) == 30
    assert month["cards"]["conversations"] == "14"

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


def fmt_iso(ms_: int) -> str:
    return datetime.fromtimestamp(ms_ / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    check_view(stack, watched, ACME_KEY, "acme", None)
    # check_view showed the tables; the main view shows the charts.
    for name in ("funnel", "intents", "timeseries"):
        page.get_by_test_id(f"table-toggle-{name}").click()
        assert page.get_by_test_id(f"table-toggle-{name}").get_attribute("aria-pressed") == "false"
    page.locator(".recharts-surface").first.wait_for()
    assert page.locator(".recharts-surface").count() >= 3
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
