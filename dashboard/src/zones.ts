// Local time in an IANA time zone, with the browser's own tz database (Intl), as the API
// reads it (CONTRACT.md section 3, "Time zones"): a day starts at local midnight, or at
// the first instant of the local date where midnight does not exist; an hour starts where
// the local clock reads a whole hour. Times are epoch milliseconds.
//
// Our own ~60 lines rather than a library: Intl already holds the tz database, and the
// one thing missing, wall time -> instant, is the few lines of `fromWall`.

export const UTC = "UTC";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface Wall {
  year: number;
  month: number; // 1-12
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(tz, f);
  }
  return f;
}

export function isZone(name: string): boolean {
  try {
    formatter(name);
    return true;
  } catch {
    return false;
  }
}

export function browserZone(): string {
  const tz = new Intl.DateTimeFormat().resolvedOptions().timeZone;
  return tz && isZone(tz) ? tz : UTC;
}

// Every zone this browser knows, UTC first, and `extra` (the current choice) if it is not
// among them (an alias such as Asia/Kolkata where the browser lists Asia/Calcutta).
export function zoneNames(extra: string): string[] {
  // Older browsers (before Chrome 99, Firefox 93, Safari 15.4) cannot list their zones.
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const names = all.filter((z) => z !== UTC);
  if (extra !== UTC && !names.includes(extra)) names.push(extra);
  return [UTC, ...names.sort()];
}

export function wallOf(tz: string, t: number): Wall {
  const parts: Record<string, number> = {};
  for (const p of formatter(tz).formatToParts(new Date(t))) {
    if (p.type !== "literal") parts[p.type] = Number(p.value);
  }
  return {
    year: parts.year ?? 1970,
    month: parts.month ?? 1,
    day: parts.day ?? 1,
    hour: parts.hour ?? 0,
    minute: parts.minute ?? 0,
    second: parts.second ?? 0,
  };
}

// The wall time read as if it were UTC (overflowing fields roll over, as in Date.UTC).
const asUtc = (w: Wall) => Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);

// Local time minus UTC at instant t.
export function offsetMs(tz: string, t: number): number {
  const whole = t - (((t % 1000) + 1000) % 1000);
  return asUtc(wallOf(tz, whole)) - whole;
}

// The instant the local clock reads `w`. A wall time that happens twice (clocks going
// back) is the earlier one; one that never happens (clocks going forward) is read with
// the offset before the change, so it lands that far after it: local midnight in a gap is
// then the first instant of the date. (Temporal calls this "compatible".)
export function fromWall(tz: string, w: Wall): number {
  const wall = asUtc(w);
  const before = wall - offsetMs(tz, wall - DAY);
  const after = wall - offsetMs(tz, wall + DAY);
  const valid = [before, after].filter((t) => t + offsetMs(tz, t) === wall);
  return valid.length > 0 ? Math.min(...valid) : before;
}

// The start of the local day `days` after the one holding instant t (days may be < 0).
export function dayStart(tz: string, t: number, days = 0): number {
  const w = wallOf(tz, t);
  return fromWall(tz, { year: w.year, month: w.month, day: w.day + days, hour: 0, minute: 0, second: 0 });
}

// The start of the local hour holding instant t.
export function hourStart(tz: string, t: number): number {
  const local = t + offsetMs(tz, t);
  return t - (((local % HOUR) + HOUR) % HOUR);
}
