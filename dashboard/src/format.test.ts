import { describe, expect, it } from "vitest";
import {
  countChange,
  describeAsOf,
  formatBucket,
  formatCount,
  formatDateTime,
  formatLag,
  formatPercent,
  formatPointTime,
  formatSeconds,
  formatSpan,
  humanize,
  rateChange,
  secondsChange,
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
    expect(describeAsOf("2026-11-30T10:42:03Z", now, "UTC")).toBe("complete up to 10:42:03 UTC, 3 s behind");
    expect(describeAsOf("2026-11-29T10:42:06Z", now, "UTC")).toBe(
      "complete up to 2026-11-29 10:42:06 UTC, 1 d behind",
    );
    // At 18:31 UTC it is already the next day in Kolkata: the date is shown.
    expect(describeAsOf("2026-11-30T14:30:00Z", new Date("2026-11-30T18:31:00Z"), "Asia/Kolkata")).toBe(
      "complete up to 2026-11-30 20:00:00 Asia/Kolkata, 4 h 1 min behind",
    );
    expect(describeAsOf("2026-11-30T14:30:00Z", new Date("2026-11-30T18:29:00Z"), "Asia/Kolkata")).toBe(
      "complete up to 20:00:00 Asia/Kolkata, 3 h 59 min behind",
    );
    expect(describeAsOf(null, now, "UTC")).toMatch(/no watermark/);
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

  it("labels buckets with the wall time the API wrote", () => {
    expect(formatBucket("2026-11-30T07:00:00Z", "hour")).toBe("07:00");
    expect(formatBucket("2026-11-30T07:00:00Z", "hour", true)).toBe("Nov 30 07:00");
    expect(formatBucket("2026-11-30T00:00:00Z", "day")).toBe("Nov 30");
    expect(formatBucket("2026-03-09T00:00:00+05:30", "day")).toBe("Mar 9");
    expect(formatPointTime("2026-11-30T07:00:00+05:30")).toBe("2026-11-30 07:00");
    expect(formatDateTime(new Date("2026-11-30T01:30:00Z"), "Asia/Kolkata")).toBe("2026-11-30 07:00");
  });

  it("formats spans of time to convert", () => {
    expect(formatSpan(null)).toBe("–");
    expect(formatSpan(0.4)).toBe("0 s");
    expect(formatSpan(600)).toBe("10 min");
    expect(formatSpan(93784.9)).toBe("1 d 2 h");
  });
});

describe("changes against the previous period", () => {
  it.each([
    [12, 10, "+2 (+20.0%)"],
    [8, 10, "−2 (−20.0%)"],
    [10, 10, "0 (0.0%)"],
    [3, 0, "+3 (n/a)"],
    [0, 0, "0 (n/a)"],
    [1, 3, "−2 (−66.7%)"],
  ])("count %d vs %d is %s", (now, before, text) => {
    expect(countChange(now, before)).toBe(text);
  });

  it("gives rates in percentage points and durations in seconds", () => {
    expect(rateChange(0.5, 0.25)).toBe("+25.0 pp");
    expect(rateChange(0.25, 0.5)).toBe("−25.0 pp");
    expect(rateChange(0.5, 0)).toBe("n/a");
    expect(secondsChange(38.25, 40)).toBe("−1.8 s (−4.4%)");
    expect(secondsChange(40, 0)).toBe("+40.0 s (n/a)");
  });
});
