import { describe, expect, it } from "vitest";
import { type DashboardData, keepStale, loadKey, mergeSeries, oldestAsOf } from "./dashboard";
import { parseState } from "./state";
import { ApiError, retryAfterMs } from "./api";

describe("dashboard data", () => {
  it("merges the three series by bucket", () => {
    const t1 = "2026-11-30T09:00:00Z";
    const t2 = "2026-11-30T10:00:00Z";
    const rows = mergeSeries([
      [
        { t: t2, value: 5 },
        { t: t1, value: 4 },
      ],
      [
        { t: t1, value: 2 },
        { t: t2, value: 3 },
      ],
      [
        { t: t1, value: 1 },
        { t: t2, value: 0 },
      ],
    ]);
    expect(rows).toEqual([
      { t: t1, conversations: 4, engaged: 2, intents: 1 },
      { t: t2, conversations: 5, engaged: 3, intents: 0 },
    ]);
  });

  it("reports the oldest watermark, ignoring answers without one", () => {
    expect(
      oldestAsOf([{ as_of: "2026-11-30T10:42:03Z" }, { as_of: null }, { as_of: "2026-11-30T10:41:59Z" }]),
    ).toBe("2026-11-30T10:41:59Z");
    expect(oldestAsOf([{ as_of: null }])).toBeNull();
  });

  it("keeps the last numbers of parts that failed, with the older watermark", () => {
    const range = { from: new Date("2026-11-30T00:00:00Z"), to: new Date("2026-12-01T00:00:00Z") };
    const base: DashboardData = {
      range,
      overview: null,
      series: [],
      campaigns: null,
      usage: null,
      timeToConvert: null,
      heatmap: null,
      breakdown: null,
      errors: [],
      asOf: "2026-11-30T10:00:00Z",
      sources: ["rollups"],
      loadedAt: new Date("2026-11-30T10:00:01Z"),
    };
    const failed: DashboardData = {
      ...base,
      series: null,
      errors: [new ApiError(0, "network_error", "down")],
      asOf: null,
      sources: [],
      loadedAt: new Date("2026-11-30T10:00:06Z"),
    };
    const merged = keepStale(base, failed);
    expect(merged.series).toEqual([]);
    expect(merged.asOf).toBe("2026-11-30T10:00:00Z");
    expect(merged.errors).toHaveLength(1);
    expect(merged.loadedAt).toEqual(base.loadedAt);
    const fresh = { ...base, asOf: "2026-11-30T10:00:05Z" };
    expect(keepStale(base, fresh)).toBe(fresh);
  });
});

describe("retryAfterMs", () => {
  it("follows the API's Retry-After within bounds", () => {
    expect(retryAfterMs("1")).toBe(1000);
    expect(retryAfterMs("3")).toBe(3000);
    expect(retryAfterMs("600")).toBe(10000);
    expect(retryAfterMs(null)).toBe(1000);
    expect(retryAfterMs("soon")).toBe(1000);
  });
});

describe("loadKey", () => {
  it("changes with what the requests ask, not with the open list or the heatmap's values", () => {
    const auth = { key: "k", tenant: null };
    const view = parseState("?range=7d", "UTC");
    const key = loadKey(auth, view);
    expect(loadKey(auth, { ...view, drop: 2, heat: "engagement" })).toBe(key);
    for (const change of [
      { tz: "Asia/Kolkata" },
      { order: "sequence" as const },
      { window: 60 },
      { by: "campaign" },
    ])
      expect(loadKey(auth, { ...view, ...change })).not.toBe(key);
    expect(loadKey({ key: "other", tenant: null }, view)).not.toBe(key);
  });
});
