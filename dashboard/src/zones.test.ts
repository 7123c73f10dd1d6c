import { describe, expect, it } from "vitest";
import { dayStart, fromWall, hourStart, offsetMs, wallOf, zoneNames } from "./zones";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const ZONES = [
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "Asia/Kolkata",
  "Asia/Kathmandu",
  "America/Sao_Paulo",
  "Australia/Lord_Howe",
];
const utc = (s: string) => Date.parse(s);
const iso = (t: number) => new Date(t).toISOString();

// Random instants, reproducibly: 2017-2027, and each zone's DST changes in 2018 and 2026.
function samples(n: number, seed: number): number[] {
  let x = seed;
  const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const near = [
    "2018-03-25T01:00:00Z",
    "2018-10-28T01:00:00Z",
    "2018-11-04T03:00:00Z",
    "2026-03-08T07:00:00Z",
    "2026-11-01T06:00:00Z",
    "2026-03-29T01:00:00Z",
    "2026-10-25T01:00:00Z",
    "2026-04-04T15:00:00Z",
  ].map(utc);
  return Array.from({ length: n }, (_, i) => {
    const around = near[i % near.length] ?? 0;
    const base = i % 2 ? around : utc("2017-01-01T00:00:00Z") + next() * 11 * 365 * 24 * HOUR;
    return Math.floor(base + (next() - 0.5) * 6 * HOUR);
  });
}

const sameDate = (a: ReturnType<typeof wallOf>, b: ReturnType<typeof wallOf>) =>
  a.year === b.year && a.month === b.month && a.day === b.day;

// Brute force, minute by minute with Intl alone: the first instant of t's local date, and
// the last instant at or before t where the local clock read a whole hour.
function bruteDayStart(tz: string, t: number): number {
  const date = wallOf(tz, t);
  let s = t - (t % MINUTE);
  while (sameDate(wallOf(tz, s - MINUTE), date)) s -= MINUTE;
  return s;
}

function bruteHourStart(tz: string, t: number): number {
  let s = t - (t % MINUTE);
  while (wallOf(tz, s).minute !== 0) s -= MINUTE;
  return s;
}

describe("time zones", () => {
  it("knows the offsets around DST changes", () => {
    expect(offsetMs("Europe/Berlin", utc("2026-03-29T00:59:59Z"))).toBe(HOUR);
    expect(offsetMs("Europe/Berlin", utc("2026-03-29T01:00:00Z"))).toBe(2 * HOUR);
    expect(offsetMs("Asia/Kolkata", utc("2026-11-30T10:00:00Z"))).toBe(5.5 * HOUR);
  });

  it("starts days at local midnight: 23 and 25 hours across DST, the gap's end where midnight is skipped", () => {
    const berlin = (s: string) => iso(dayStart("Europe/Berlin", utc(s)));
    expect(berlin("2026-03-29T12:00:00Z")).toBe("2026-03-28T23:00:00.000Z");
    expect(dayStart("Europe/Berlin", utc("2026-03-29T12:00:00Z"), 1) - utc("2026-03-28T23:00:00Z")).toBe(
      23 * HOUR,
    );
    expect(
      dayStart("Europe/Berlin", utc("2026-10-25T12:00:00Z"), 1) -
        dayStart("Europe/Berlin", utc("2026-10-25T12:00:00Z")),
    ).toBe(25 * HOUR);
    // São Paulo went from 00:00 straight to 01:00 on 2018-11-04.
    expect(iso(dayStart("America/Sao_Paulo", utc("2018-11-04T15:00:00Z")))).toBe("2018-11-04T03:00:00.000Z");
    expect(iso(dayStart("Asia/Kolkata", utc("2026-11-30T20:00:00Z"), -2))).toBe("2026-11-28T18:30:00.000Z");
  });

  it("agrees with a minute-by-minute search for day and hour starts", () => {
    for (const tz of ZONES) {
      for (const t of samples(12, tz.length)) {
        expect(iso(dayStart(tz, t)), `${tz} ${iso(t)}`).toBe(iso(bruteDayStart(tz, t)));
        expect(iso(hourStart(tz, t)), `${tz} ${iso(t)}`).toBe(iso(bruteHourStart(tz, t)));
      }
    }
  });

  it("reads a wall time back as its instant, the earlier one when the clock repeats", () => {
    const same = (a: ReturnType<typeof wallOf>, b: ReturnType<typeof wallOf>) =>
      sameDate(a, b) && a.hour === b.hour && a.minute === b.minute;
    for (const tz of ZONES) {
      for (const sample of samples(40, 7 + tz.length)) {
        const t = sample - (sample % MINUTE);
        const wall = wallOf(tz, t);
        let earliest = t - 3 * HOUR; // no clock here goes back by more than an hour
        while (!same(wallOf(tz, earliest), wall)) earliest += MINUTE;
        expect(iso(fromWall(tz, wall)), `${tz} ${iso(t)}`).toBe(iso(earliest));
      }
    }
    // New York 2026-11-01 01:30 happens twice: the first, in EDT.
    const w = { year: 2026, month: 11, day: 1, hour: 1, minute: 30, second: 0 };
    expect(iso(fromWall("America/New_York", w))).toBe("2026-11-01T05:30:00.000Z");
  });

  it("lists UTC first and keeps a zone the browser spells differently", () => {
    const names = zoneNames("Asia/Kolkata");
    expect(names[0]).toBe("UTC");
    expect(names).toContain("Asia/Kolkata");
    expect(names).toContain("Europe/Berlin");
    expect(new Set(names).size).toBe(names.length);
  });
});
