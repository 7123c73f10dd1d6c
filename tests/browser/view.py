"""Reading the dashboard: one view's requests, and everything it shows, against the API.

`check_view` waits for the requests a view sends, asks the API the very same requests
with httpx, checks those answers against the known events (tests/oracle.py and
conftest's `expected`), and compares every number the page shows, as text, with the
answers formatted as dashboard/src/format.ts documents (tests/browser/formats.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

from tests import oracle

from .conftest import STEPS, Stack, Watched
from .formats import (
    count_change,
    fmt_count,
    fmt_datetime,
    fmt_number,
    fmt_percent,
    fmt_point,
    fmt_seconds,
    fmt_span,
    humanize,
    rate_change,
    seconds_change,
)

VIEW_PATHS = ("overview", "campaigns", "usage", "timeseries")
SERIES = ("conversations", "engaged", "intents")  # dashboard.ts SERIES, in column order

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


SNAPSHOT = """() => {
  const cells = (rows) => [...rows].map(r => [...r.cells].map(c => c.textContent.trim()));
  const rows = (selector) => cells(document.querySelectorAll(selector));
  const table = (name, part) => rows(`[data-panel="${name}"] table ${part} tr`);
  const text = (e, selector) => e.querySelector(selector).textContent.trim();
  return {
    texts: Object.fromEntries([...document.querySelectorAll('[data-testid]')]
      .map(e => [e.dataset.testid, e.textContent.trim()])),
    subs: Object.fromEntries([...document.querySelectorAll('li.card')]
      .map(li => [li.querySelector('.card-value').dataset.testid, text(li, '.card-sub')])),
    steps: [...document.querySelectorAll('ol.funnel-steps li')]
      .map(li => [text(li, '.funnel-name'), text(li, '.muted')]),
    tables: Object.fromEntries(['funnel', 'intents', 'timeseries']
      .map(n => [n, table(n, 'tbody')])),
    intentsTotal: table('intents', 'tfoot'),
    usage: rows('[aria-labelledby="usage-title"] table tbody tr'),
    campaigns: [...document.querySelectorAll('[data-testid="campaign-picker"] option')]
      .map(o => o.textContent.trim()),
    campaign: document.querySelector('[data-testid="campaign-picker"]')?.value ?? null,
  };
}"""
"""Everything check_view compares, read from the page in one round trip."""


def view_requests(watched: Watched, since: int, tenant_param: str | None,
                  campaign: str | None, tz: str, where: Callable[[dict[str, str]], bool],
                  interval: str | None, funnel_query: dict[str, str]) -> dict[str, Any]:
    """The requests of one view, each checked for its parameters."""
    overview_path = f"campaign/{quote(campaign, safe='')}" if campaign else "overview"
    url, query = wait_for_request(watched, overview_path, since, where=where,
                                  tenant=tenant_param, **funnel_query)
    frm, to = query["from"], query["to"]
    envelope = {"from": frm, "to": to} | ({"tenant": tenant_param} if tenant_param else {})
    assert query == envelope | funnel_query | {"compare": "previous"}, url
    out: dict[str, Any] = {"overview": url, "query": query, "envelope": envelope}
    for path in VIEW_PATHS[1:3]:  # tenant-wide: no campaign parameter
        out[path], q = wait_for_request(watched, path, since, tenant=tenant_param,
                                        **{"from": frm})
        assert q == envelope, (path, q)
    out["series"] = {}
    for metric in SERIES:
        out["series"][metric], q = wait_for_request(
            watched, "timeseries", since, metric=metric, tenant=tenant_param, campaign=campaign,
            tz=tz, **{"from": frm}, **({"interval": interval} if interval else {}))
        assert q["to"] == to, q
    out["ttc"], q = wait_for_request(watched, "time-to-convert", since, tenant=tenant_param,
                                     campaign=campaign, **{"from": frm}, **funnel_query)
    assert q == envelope | funnel_query | ({"campaign": campaign} if campaign else {}), q
    return out


def view_answers(stack: Stack, key: str, tenant: str, campaign: str | None,
                 requests: dict[str, Any], order: str, window: int | None) -> dict[str, Any]:
    """The API's answers to exactly those requests, checked against the known events."""
    frm, to = requests["query"]["from"], requests["query"]["to"]
    overview = stack.get(requests["overview"], key)
    assert (overview["tenant_id"], overview["campaign_id"]) == (tenant, campaign), overview
    assert (ms(overview["from"]), ms(overview["to"])) == (ms(frm), ms(to)), overview
    answers = {"overview": overview, "usage": stack.get(requests["usage"], key)["usage"],
               "campaigns": stack.get(requests["campaigns"], key)["campaigns"],
               "series": {m: stack.get(u, key) for m, u in requests["series"].items()},
               "times": stack.get(requests["ttc"], key)["steps"],
               "intents": stack.get("/analytics/intents", key, requests["envelope"] | (
                   {"campaign": campaign} if campaign else {}))}
    exp = stack.expected(tenant, campaign, ms(frm), ms(to))
    assert overview["conversations"]["total"] == exp.conversations, (overview, exp)
    assert [s["step"] for s in overview["funnel"]] == list(STEPS), overview
    assert answers["usage"] == exp.usage, answers["usage"]
    assert {c["campaign_id"]: c["conversations"] for c in answers["campaigns"]} == \
        exp.campaigns, answers["campaigns"]
    for metric in SERIES:
        assert sum(p["value"] for p in answers["series"][metric]["points"]) == {
            "conversations": exp.conversations, "engaged": exp.engaged,
            "intents": sum(exp.intents.values())}[metric], answers["series"][metric]
    previous = overview["previous"]
    before = (ms(previous["from"]), ms(previous["to"]))
    assert before == (2 * ms(frm) - ms(to), ms(frm)), previous
    scope = (stack.stream, tenant, campaign, campaign is not None)
    for numbers, (a, b) in ((overview, (ms(frm), ms(to))), (previous, before)):
        want = oracle.overview(*scope, a * 1000, b * 1000, STEPS, 30.0, order, window)
        assert oracle.approx_equal({k: numbers[k] for k in want}, want), (numbers, want)
    assert oracle.approx_equal(answers["times"], oracle.time_to_convert(
        *scope, ms(frm) * 1000, ms(to) * 1000, STEPS, order, window)), answers["times"]
    by_label = overview["intents"]["by_label"]
    assert [i["label"] for i in answers["intents"]["intents"]] == sorted(
        by_label, key=lambda label: (-by_label[label]["count"], label)), answers["intents"]
    return answers


def card_texts(overview: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The cards' values, and their changes against the previous period."""
    conv, eng, ints = overview["conversations"], overview["engagement"], overview["intents"]
    pc, pe, pi = (overview["previous"][k] for k in ("conversations", "engagement", "intents"))
    cards = {
        "conversations": fmt_count(conv["total"]), "calls": fmt_count(conv["calls"]),
        "chats": fmt_count(conv["chats"]), "avg-duration": fmt_seconds(eng["avg_duration_s"]),
        "engagement-rate": fmt_percent(eng["engagement_rate"]),
        "intent-rate": fmt_percent(ints["intent_rate"]),
    }
    changes = {
        "conversations": count_change(conv["total"], pc["total"]),
        "calls": count_change(conv["calls"], pc["calls"]),
        "chats": count_change(conv["chats"], pc["chats"]),
        "avg-duration": seconds_change(eng["avg_duration_s"], pe["avg_duration_s"]),
        "engagement-rate": rate_change(eng["engagement_rate"], pe["engagement_rate"]),
        "intent-rate": rate_change(ints["intent_rate"], pi["intent_rate"]),
    }
    return cards, changes


def expected_page(answers: dict[str, Any], frm: str, to: str, tz: str,
                  campaign: str | None) -> dict[str, Any]:
    """What the page must show for these answers: SNAPSHOT's shape, texts by test id."""
    overview, times = answers["overview"], {t["step"]: t for t in answers["times"]}
    eng, ints, funnel = overview["engagement"], overview["intents"], overview["funnel"]
    cards, changes = card_texts(overview)
    texts = {f"card-{c}": v for c, v in cards.items()} | {
        f"card-change-{c}": v for c, v in changes.items()} | {
        "range-shown": f"{fmt_datetime(frm, tz)} to {fmt_datetime(to, tz)} {tz}"}
    dash = ["\u2013", "\u2013"]
    funnel_rows = []
    for i, s in enumerate(funnel):
        texts[f"funnel-step-{s['step']}"] = fmt_count(s["customers"])
        spans = dash if not i else [fmt_span(times[s["step"]]["median_s"]),
                                    fmt_span(times[s["step"]]["p90_s"])]
        if i:
            texts[f"ttc-{s['step']}"] = f"median {spans[0]} · p90 {spans[1]}"
            texts[f"dropoff-{i + 1}"] = (
                f"{fmt_count(funnel[i - 1]['customers'] - s['customers'])} dropped off")
        funnel_rows.append([humanize(s["step"]), fmt_count(s["customers"]),
                            fmt_percent(s["conversion_from_previous"]),
                            fmt_percent(s["conversion_from_start"]), *spans])
    intent_rows = [[i["label"], fmt_count(i["count"]), fmt_percent(i["share"])]
                   for i in answers["intents"]["intents"]]
    texts |= {f"intent-{label}": fmt_count(v["count"]) for label, v in ints["by_label"].items()}
    texts |= {f"usage-{c}": fmt_number(v) for c, v in answers["usage"].items()}
    points = {m: answers["series"][m]["points"] for m in SERIES}
    assert all(answers["series"][m]["tz"] == tz for m in SERIES), answers["series"]
    listed = {c["campaign_id"]: c["conversations"] for c in answers["campaigns"]}
    if campaign and campaign not in listed:
        listed[campaign] = None
    return {
        "texts": texts,
        "subs": {"card-avg-duration": f"{fmt_seconds(eng['total_duration_s'])} in total",
                 "card-engagement-rate": f"{fmt_count(eng['engaged'])} engaged",
                 "card-intent-rate": f"{fmt_count(ints['total'])} intents"},
        "steps": [[humanize(s["step"]), "entered" if not i else
                   f"{fmt_percent(s['conversion_from_previous'])} of previous"]
                  for i, s in enumerate(funnel)],
        "tables": {"funnel": funnel_rows,
                   "intents": intent_rows or [["No intents detected in this range."]],
                   "timeseries": [[fmt_point(p["t"])] + [fmt_count(points[m][i]["value"])
                                                         for m in SERIES]
                                  for i, p in enumerate(points["conversations"])]},
        "intentsTotal": [["Total", fmt_count(ints["total"]),
                          "100.0%" if ints["total"] > 0 else ""]],
        "usage": [[c, fmt_number(v)] for c, v in sorted(answers["usage"].items())],
        "campaigns": ["All campaigns"] + [c if listed[c] is None else
                                          f"{c} ({listed[c]} conversations)"
                                          for c in sorted(listed)],
        "campaign": campaign or "",
    }


def shown_part(shown: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The page's snapshot cut to what `want` names (texts by test id, cards' subs)."""
    out = dict(shown)
    for part in ("texts", "subs"):
        out[part] = {k: shown[part].get(k) for k in want[part]}
    return {k: out[k] for k in want}


def check_view(stack: Stack, watched: Watched, key: str, tenant: str,
               campaign: str | None, since: int = 0, admin: bool = False,
               where: Callable[[dict[str, str]], bool] = lambda _: True,
               interval: str | None = None, order: str = "any",
               window: int | None = None) -> dict[str, Any]:
    """Waits for the view's requests (sent after index `since`; `where` tells the view's
    overview request from a live refresh of the previous view), then compares everything
    the page shows with the API's answers to those requests; returns what it showed."""
    page = watched.page
    tz = page.get_by_test_id("tz-picker").input_value()
    tenant_param = tenant if admin else None
    funnel_query = {"order": order} | ({} if window is None else {"window": str(window)})
    requests = view_requests(watched, since, tenant_param, campaign, tz, where, interval,
                             funnel_query)
    for headers in watched.headers[since:]:
        assert headers.get("authorization") == f"Bearer {key}", headers
    assert all("key=" not in u for u in watched.requests[since:]), watched.requests[since:]
    answers = view_answers(stack, key, tenant, campaign, requests, order, window)
    frm, to = requests["query"]["from"], requests["query"]["to"]
    want = expected_page(answers, frm, to, tz, campaign)
    show_tables(page, "funnel", "intents", "timeseries")
    deadline = time.monotonic() + 15
    while (shown := shown_part(page.evaluate(SNAPSHOT), want)) != want:  # until it is up
        if time.monotonic() > deadline:
            break
        page.wait_for_timeout(50)
    assert shown == want
    assert page.get_by_test_id("error").count() == 0, page.get_by_test_id("error").inner_text()
    overview_path = urlsplit(requests["overview"]).path.removeprefix("/analytics/")
    cards, changes = card_texts(answers["overview"])
    return {"from": frm, "to": to, "tz": tz, "cards": cards, "changes": changes,
            "query": requests["query"],
            "funnel": [want["texts"][f"funnel-step-{s}"] for s in STEPS],
            "intents": want["tables"]["intents"], "usage": want["usage"],
            "requests": {p: watched.last(p, since, tenant=tenant_param)[1] for p in
                         ("campaigns", "usage")} | {
                overview_path: requests["query"],
                "timeseries": dict(parse_qsl(urlsplit(requests["series"]["conversations"])
                                             .query))}}


def goto(watched: Watched, stack: Stack, key: str, url: str | None = None) -> float:
    """Opens the dashboard (or `url`, a view's link) with `?key=` added, as `pulse api`
    prints it; returns the ms from navigation start to the overview cards showing numbers."""
    page = watched.page
    page.add_init_script(CARDS_SHOWN_AT)
    link = url or f"{stack.base_url}/"
    page.goto(f"{link}{'&' if '?' in link else '?'}key={key}")
    page.get_by_test_id("card-conversations").wait_for()
    page.wait_for_function("window.__pulseCardsShownAt !== undefined")
    return page.evaluate("window.__pulseCardsShownAt")


def local_wall(value: str | int, tz: str) -> tuple[int, int, int, int, int]:
    """(day, month, hour, minute, second) of an instant's wall time in tz."""
    d = datetime.fromtimestamp((ms(value) if isinstance(value, str) else value) / 1000,
                               ZoneInfo(tz))
    return d.day, d.month, d.hour, d.minute, d.second


def local_input(ms_: int, tz: str) -> str:
    """A datetime-local input's value for an instant, in tz."""
    return datetime.fromtimestamp(ms_ / 1000, ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M")


def fmt_iso(ms_: int) -> str:
    return datetime.fromtimestamp(ms_ / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the insight panels: page == API == tests/oracle.py ----------------------------------

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def scope_of(stack: Stack, tenant: str, query: dict[str, str]) -> tuple:
    """The oracle's first arguments for a request's tenant, campaign and range (µs)."""
    campaign = query.get("campaign")
    return (stack.stream, tenant, campaign, campaign is not None,
            ms(query["from"]) * 1000, ms(query["to"]) * 1000)


def check_heatmap(stack: Stack, watched: Watched, key: str, tenant: str, since: int,
                  frm: str, value: str = "conversations") -> list[dict[str, Any]]:
    """The heatmap's 168 cells, as the page shows them, equal the API's (which equal the
    oracle's) for the view's zone; returns the API's cells."""
    page = watched.page
    tz = page.get_by_test_id("tz-picker").input_value()
    url, query = wait_for_request(watched, "heatmap", since, tz=tz, **{"from": frm})
    answer = stack.get(url, key)
    assert answer["tz"] == tz, answer
    assert oracle.approx_equal(answer["cells"], oracle.heatmap(
        *scope_of(stack, tenant, query), tz, 30.0)), answer["cells"]
    want = {f"heat-{c['weekday']}-{c['hour']}": fmt_count(c["conversations"])
            if value == "conversations" else fmt_percent(c["engagement_rate"])
            for c in answer["cells"]}
    panel = page.locator('[data-panel="heatmap"]')
    panel.get_by_test_id("heat-6-23").wait_for()

    def shown() -> dict[str, str]:
        return dict(panel.locator("td[data-testid]").evaluate_all(
            "cells => cells.map(c => [c.dataset.testid, c.textContent.trim()])"))

    deadline = time.monotonic() + 10
    while shown() != want and time.monotonic() < deadline:  # until this view's cells are up
        page.wait_for_timeout(50)
    assert shown() == want
    busiest = max(answer["cells"], key=lambda c: c["conversations"])
    title = panel.get_by_test_id(f"heat-{busiest['weekday']}-{busiest['hour']}").get_attribute(
        "title")
    assert title == (f"{WEEKDAYS[busiest['weekday']]} {busiest['hour']:02d}:00: "
                     f"{fmt_count(busiest['conversations'])} conversations, "
                     f"{fmt_count(busiest['engaged'])} engaged "
                     f"({fmt_percent(busiest['engagement_rate'])})")
    return answer["cells"]


def group_label(by: str, value: str | None) -> str:
    if value is not None:
        return value
    return {"campaign": "(no campaign)", "channel": "(no channel)"}.get(by, "(not set)")


def check_breakdown(stack: Stack, watched: Watched, key: str, tenant: str, since: int,
                    frm: str, by: str) -> list[list[str]]:
    """The breakdown table equals the API's groups and other (which equal the oracle's);
    returns the rows shown."""
    from playwright.sync_api import expect

    page = watched.page
    url, query = wait_for_request(watched, "breakdown", since, by=by, **{"from": frm})
    answer = stack.get(url, key)
    assert oracle.approx_equal({k: answer[k] for k in ("groups", "other")}, oracle.breakdown(
        *scope_of(stack, tenant, query), by, 25, 30.0)), answer

    def row(label: str, g: dict[str, Any]) -> list[str]:
        return [label, fmt_count(g["conversations"]), fmt_count(g["engaged"]),
                fmt_percent(g["engagement_rate"]), fmt_seconds(g["avg_duration_s"])]

    want = [row(group_label(by, g["value"]), g) for g in answer["groups"]]
    show_tables(page, "breakdown")
    heading = by.removeprefix("metadata.") if by.startswith("metadata.") else by
    panel = page.locator('[data-panel="breakdown"]')
    expect(panel.locator("thead th").first).to_have_text(heading)
    deadline = time.monotonic() + 10
    while table_cells(page, "breakdown") != want and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert table_cells(page, "breakdown") == want
    other = [row("Other", answer["other"])] if answer["other"] else []
    assert table_cells(page, "breakdown", "tfoot") == other
    return want


def check_dropoff(stack: Stack, watched: Watched, key: str, tenant: str, since: int,
                  frm: str, step: int, order: str = "any",
                  window: int | None = None) -> list[list[str]]:
    """The drop-off list at `step` equals the API's first page (which equals the oracle's
    list) for the view's funnel options; returns the rows shown."""
    from playwright.sync_api import expect

    page = watched.page
    tz = page.get_by_test_id("tz-picker").input_value()
    funnel = {"order": order} | ({} if window is None else {"window": str(window)})
    url, query = wait_for_request(watched, "funnel/customers", since, step=str(step),
                                  outcome="dropped", **funnel, **{"from": frm})
    assert query["limit"] == "50" and "cursor" not in query, query
    answer = stack.get(url, key)
    want = oracle.funnel_customers(*scope_of(stack, tenant, query), STEPS, step, "dropped",
                                   order, window)
    assert [(c["campaign_id"], c["customer_id"], ms(c["entered_at"]) * 1000, c["reached_step"])
            for c in answer["customers"]] == want[:50], answer
    assert (answer["next_cursor"] is None) == (len(want) <= 50), answer
    rows = [[c["customer_id"], c["campaign_id"] or "(no campaign)",
             fmt_datetime(c["entered_at"], tz), humanize(STEPS[c["reached_step"] - 1])]
            for c in answer["customers"]] or [["Nobody dropped off at this step."]]
    panel = page.locator('[data-panel="dropoff"]')
    expect(panel.get_by_test_id("dropoff-shown")).to_have_text(
        f"{fmt_count(len(answer['customers']))} shown")
    assert panel.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))") == rows
    return rows
