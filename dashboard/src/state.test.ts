import { describe, expect, it } from "vitest";
import {
  fromLocalInput,
  parseState,
  resolveRange,
  stateToSearch,
  takeKey,
  toRfc3339,
  type ViewState,
} from "./state";

const NOW = new Date("2026-11-30T10:42:03.250Z");

describe("URL state", () => {
  it("defaults to the last 24 hours, hourly, all campaigns", () => {
    expect(parseState("")).toEqual({
      tenant: null,
      campaign: null,
      preset: "24h",
      from: null,
      to: null,
      interval: "hour",
    });
  });

  it.each<ViewState>([
    { tenant: "acme", campaign: "spring sale", preset: "7d", from: null, to: null, interval: "day" },
    { tenant: null, campaign: null, preset: "30d", from: null, to: null, interval: "day" },
    {
      tenant: null,
      campaign: "c&1",
      preset: "custom",
      from: "2026-11-01T00:00:00Z",
      to: "2026-11-08T12:30:00Z",
      interval: "hour",
    },
  ])("round-trips %o", (state) => {
    expect(parseState(stateToSearch(state))).toEqual(state);
  });

  it("keeps foreign parameters and never writes the key", () => {
    const search = stateToSearch(parseState("?range=7d"), "?key=secret&theme=dark&range=24h");
    const q = new URLSearchParams(search);
    expect(q.get("key")).toBeNull();
    expect(q.get("theme")).toBe("dark");
    expect(q.get("range")).toBe("7d");
  });

  it("picks the interval from the preset unless the URL names one", () => {
    expect(parseState("?range=30d").interval).toBe("day");
    expect(parseState("?range=30d&interval=hour").interval).toBe("hour");
    expect(parseState("?range=7d&interval=week").interval).toBe("hour");
  });

  it("falls back to the default for an unknown preset or an unreadable custom range", () => {
    expect(parseState("?range=year").preset).toBe("24h");
    expect(parseState("?range=custom&from=2026-11-01").preset).toBe("24h");
    expect(parseState("?range=custom&from=yesterday&to=2026-11-02").preset).toBe("24h");
  });

  it("takes the key out of the query string", () => {
    expect(takeKey("?key=abc&tenant=acme&range=7d")).toEqual({ key: "abc", search: "?tenant=acme&range=7d" });
    expect(takeKey("?key=abc")).toEqual({ key: "abc", search: "" });
    expect(takeKey("?range=7d")).toEqual({ key: null, search: "?range=7d" });
  });
});

describe("presets", () => {
  const range = (search: string) => {
    const r = resolveRange(parseState(search), NOW);
    return [toRfc3339(r.from), toRfc3339(r.to)];
  };

  it("aligns the last 24 hours to whole UTC hours, ending with the current hour", () => {
    expect(range("?range=24h")).toEqual(["2026-11-29T11:00:00Z", "2026-11-30T11:00:00Z"]);
  });

  it("aligns the last 7 and 30 days to the interval's buckets", () => {
    expect(range("?range=7d")).toEqual(["2026-11-23T11:00:00Z", "2026-11-30T11:00:00Z"]);
    expect(range("?range=7d&interval=day")).toEqual(["2026-11-24T00:00:00Z", "2026-12-01T00:00:00Z"]);
    expect(range("?range=30d")).toEqual(["2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"]);
    expect(range("?range=30d&interval=hour")).toEqual(["2026-10-31T11:00:00Z", "2026-11-30T11:00:00Z"]);
  });

  it("keeps the last 24 hours hourly-aligned whatever the interval", () => {
    expect(range("?range=24h&interval=day")).toEqual(["2026-11-29T11:00:00Z", "2026-11-30T11:00:00Z"]);
  });

  it("uses a custom range as given, normalised to UTC", () => {
    expect(range("?range=custom&from=2026-11-01T01:00:00%2B01:00&to=2026-11-02")).toEqual([
      "2026-11-01T00:00:00Z",
      "2026-11-02T00:00:00Z",
    ]);
  });

  it("reads datetime-local inputs as UTC", () => {
    expect(fromLocalInput("2026-11-30T10:00")?.toISOString()).toBe("2026-11-30T10:00:00.000Z");
    expect(fromLocalInput("")).toBeNull();
  });
});
