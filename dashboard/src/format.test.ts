import { describe, expect, it } from "vitest";
import {
  describeAsOf,
  formatBucket,
  formatCount,
  formatLag,
  formatPercent,
  formatSeconds,
  humanize,
} from "./format";

describe("lag", () => {
  it.each([
    [0, "0 s"],
    [-5000, "0 s"],
    [3_400, "3 s"],
    [59_999, "59 s"],
    [60_000, "1 min"],
    [185_000, "3 min 5 s"],
    [3_600_000, "1 h"],
    [7_440_000, "2 h 4 min"],
    [90_000_000, "1 d 1 h"],
  ])("%d ms is %s", (ms, text) => {
    expect(formatLag(ms)).toBe(text);
  });

  it("describes the watermark and how far behind it is", () => {
    const now = new Date("2026-11-30T10:42:06Z");
    expect(describeAsOf("2026-11-30T10:42:03Z", now)).toBe("complete up to 10:42:03 UTC, 3 s behind");
    expect(describeAsOf("2026-11-29T10:42:06Z", now)).toBe(
      "complete up to 2026-11-29 10:42:06 UTC, 1 d behind",
    );
    expect(describeAsOf(null, now)).toMatch(/no watermark/);
  });
});

describe("numbers", () => {
  it("formats counts, rates and durations for exact comparison", () => {
    expect(formatCount(1234)).toBe("1234");
    expect(formatPercent(0.4567)).toBe("45.7%");
    expect(formatPercent(0)).toBe("0.0%");
    expect(formatPercent(1)).toBe("100.0%");
    expect(formatSeconds(61.25)).toBe("61.3 s");
  });

  it("humanizes step names", () => {
    expect(humanize("picked_up")).toBe("Picked up");
    expect(humanize("qualified")).toBe("Qualified");
  });

  it("labels buckets in UTC", () => {
    expect(formatBucket("2026-11-30T07:00:00Z", "hour")).toBe("07:00");
    expect(formatBucket("2026-11-30T07:00:00Z", "hour", true)).toBe("Nov 30 07:00");
    expect(formatBucket("2026-11-30T00:00:00Z", "day")).toBe("Nov 30");
  });
});
