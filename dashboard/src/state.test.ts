import { describe, expect, it } from "vitest";
import {
  fromLocalInput,
  parseState,
  readWhen,
  resolveRange,
  splitWindow,
  stateToSearch,
  takeKey,
  toLocalInput,
  toRfc3339,
  type ViewState,
  wallInput,
} from "./state";

const NOW = new Date("2026-11-30T10:42:03.250Z");
const DEFAULTS = {
  tz: "UTC",
  order: "any",
  window: null,
  by: "channel",
  drop: null,
  heat: "conversations",
} as const;

describe("URL state", () => {
  it("defaults to the last 24 hours, hourly, all campaigns, the browser's zone", () => {
    expect(parseState("", "Europe/Berlin")).toEqual({
      tenant: null,
      campaign: null,
      preset: "24h",
      from: null,
      to: null,
      interval: "hour",
      ...DEFAULTS,
      tz: "Europe/Berlin",
    });
  });

  it.each<ViewState>([
    {
      tenant: "acme",
      campaign: "spring sale",
      preset: "7d",
      from: null,
      to: null,
      interval: "day",
      ...DEFAULTS,
    },
    {
      tenant: null,
      campaign: null,
      preset: "30d",
      from: null,
      to: null,
      interval: "day",
      tz: "Asia/Kolkata",
      order: "sequence",
      window: 86400,
      by: "metadata.agent name",
      drop: 3,
      heat: "engagement",
    },
    {
      tenant: null,
      campaign: "c&1",
      preset: "custom",
      from: "2026-11-01T00:00",
      to: "2026-11-08T12:30",
      interval: "hour",
      ...DEFAULTS,
      tz: "America/New_York",
      by: "campaign",
    },
    {
      tenant: null,
      campaign: null,
      preset: "custom",
      from: "2026-11-01T00:00:00Z",
      to: "2026-11-08T12:30:00+01:00",
      interval: "day",
      ...DEFAULTS,
    },
  ])("round-trips %o, whatever the browser's zone", (state) => {
    expect(parseState(stateToSearch(state), "Pacific/Auckland")).toEqual(state);
  });

  it("writes every choice, defaults included, so a link shows the same view anywhere", () => {
    const q = new URLSearchParams(stateToSearch(parseState("", "Europe/Berlin")));
    expect(Object.fromEntries(q)).toEqual({
      range: "24h",
      interval: "hour",
      tz: "Europe/Berlin",
      order: "any",
      by: "channel",
      heat: "conversations",
    });
  });

  it("keeps foreign parameters and never writes the key", () => {
    const search = stateToSearch(parseState("?range=7d", "UTC"), "?key=secret&theme=dark&range=24h");
    const q = new URLSearchParams(search);
    expect(q.get("key")).toBeNull();
    expect(q.get("theme")).toBe("dark");
    expect(q.get("range")).toBe("7d");
  });

  it("picks the interval from the preset unless the URL names one", () => {
    expect(parseState("?range=30d", "UTC").interval).toBe("day");
    expect(parseState("?range=30d&interval=hour", "UTC").interval).toBe("hour");
    expect(parseState("?range=7d&interval=week", "UTC").interval).toBe("hour");
  });

  it("falls back to the defaults for values it cannot read", () => {
    expect(parseState("?range=year", "UTC").preset).toBe("24h");
    expect(parseState("?range=custom&from=2026-11-01", "UTC").preset).toBe("24h");
    expect(parseState("?range=custom&from=yesterday&to=2026-11-02", "UTC").preset).toBe("24h");
    expect(parseState("?range=custom&from=2026-13-01&to=2026-11-02", "UTC").preset).toBe("24h");
    const odd = parseState(
      "?tz=Mars/Olympus&order=random&window=-5&by=metadata.&drop=1&heat=x",
      "Asia/Tokyo",
    );
    expect(odd).toMatchObject({ ...DEFAULTS, tz: "Asia/Tokyo" });
    expect(parseState("?window=1.5&drop=two&by=agent", "UTC")).toMatchObject(DEFAULTS);
  });

  it("takes the key out of the query string", () => {
    expect(takeKey("?key=abc&tenant=acme&range=7d")).toEqual({ key: "abc", search: "?tenant=acme&range=7d" });
    expect(takeKey("?key=abc")).toEqual({ key: "abc", search: "" });
    expect(takeKey("?range=7d")).toEqual({ key: null, search: "?range=7d" });
  });
});

describe("presets", () => {
  const range = (search: string, now = NOW) => {
    const r = resolveRange(parseState(search, "UTC"), now);
    return [toRfc3339(r.from), toRfc3339(r.to)];
  };

  it("aligns the last 24 hours to whole hours of the zone, ending with the current one", () => {
    expect(range("?range=24h")).toEqual(["2026-11-29T11:00:00Z", "2026-11-30T11:00:00Z"]);
    // Kolkata's hours start at half past, UTC: 10:42 UTC is 16:12 there.
    expect(range("?range=24h&tz=Asia/Kolkata")).toEqual(["2026-11-29T11:30:00Z", "2026-11-30T11:30:00Z"]);
  });

  it("aligns the last 7 and 30 days to the interval's buckets in the zone", () => {
    expect(range("?range=7d")).toEqual(["2026-11-23T11:00:00Z", "2026-11-30T11:00:00Z"]);
    expect(range("?range=7d&interval=day")).toEqual(["2026-11-24T00:00:00Z", "2026-12-01T00:00:00Z"]);
    expect(range("?range=30d")).toEqual(["2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"]);
    expect(range("?range=30d&interval=hour")).toEqual(["2026-10-31T11:00:00Z", "2026-11-30T11:00:00Z"]);
    // Berlin's local days, across the change back to CET on Oct 25 (a 25-hour day).
    expect(range("?range=7d&interval=day&tz=Europe/Berlin", new Date("2026-10-27T12:00:00Z"))).toEqual([
      "2026-10-20T22:00:00Z",
      "2026-10-27T23:00:00Z",
    ]);
  });

  it("keeps the last 24 hours hourly-aligned whatever the interval", () => {
    expect(range("?range=24h&interval=day")).toEqual(["2026-11-29T11:00:00Z", "2026-11-30T11:00:00Z"]);
  });

  it("reads a custom range as wall times in the zone, or as the instants it names", () => {
    expect(range("?range=custom&from=2026-11-01T01:00:00%2B01:00&to=2026-11-02T00:00:00Z")).toEqual([
      "2026-11-01T00:00:00Z",
      "2026-11-02T00:00:00Z",
    ]);
    expect(range("?range=custom&from=2026-11-01T00:00&to=2026-11-02&tz=Asia/Kolkata")).toEqual([
      "2026-10-31T18:30:00Z",
      "2026-11-01T18:30:00Z",
    ]);
  });
});

describe("inputs", () => {
  it("shows and reads datetime-local values as wall times of the zone", () => {
    expect(fromLocalInput("2026-11-30T10:00", "UTC")?.toISOString()).toBe("2026-11-30T10:00:00.000Z");
    expect(fromLocalInput("2026-11-30T10:00", "Asia/Kolkata")?.toISOString()).toBe(
      "2026-11-30T04:30:00.000Z",
    );
    expect(fromLocalInput("", "UTC")).toBeNull();
    expect(toLocalInput(new Date("2026-11-30T04:30:00Z"), "Asia/Kolkata")).toBe("2026-11-30T10:00");
    expect(wallInput("2026-11-30T04:30:00Z", "Asia/Kolkata")).toBe("2026-11-30T10:00");
    expect(wallInput("2026-11-30", "Asia/Kolkata")).toBe("2026-11-30T00:00");
    expect(readWhen("2026-11-30T10:00:00", "UTC")?.toISOString()).toBe("2026-11-30T10:00:00.000Z");
    expect(readWhen("2026-11-30T10:00:00+0100", "UTC")).toBeNull();
  });

  it("writes the funnel window in the largest unit that divides it", () => {
    expect(splitWindow(null)).toEqual({ amount: "", unit: "h" });
    expect(splitWindow(172800)).toEqual({ amount: "2", unit: "d" });
    expect(splitWindow(5400)).toEqual({ amount: "90", unit: "min" });
    expect(splitWindow(61)).toEqual({ amount: "61", unit: "s" });
  });
});
