// Every number the page shows goes through here, so a test can recompute it from the
// API's answer and compare text exactly:
//   counts          plain integers, no grouping:        1234
//   rates, shares   percent with one decimal (JS toFixed, i.e. the double's exact value
//                   rounded, ties away from zero):      0.4567 -> "45.7%"
//   durations       seconds with one decimal and unit:  61.25 -> "61.3 s"
//   spans of time   the two largest units, floored:     7440 s -> "2 h 4 min"; none -> "–"
//   other numbers   (usage totals) at most 2 decimals:  12.5, 3, 0.33
//   times           24-hour clock in the view's zone:   "2026-11-30 10:42", "10:42:03"
// Changes against the previous period (`now` and `before`, signs "+" and "−" U+2212):
//   counts          delta, then percent of before:      12 vs 10 -> "+2 (+20.0%)"
//   durations       delta in seconds, then percent:     38.25 vs 40 -> "−1.8 s (−4.4%)"
//   rates           percentage points:                  0.5 vs 0.25 -> "+25.0 pp"
//   before is 0     the percent, or the rate change:    "+3 (n/a)", "n/a"
// (The delta's digits are toFixed of |now - before|; the percent's are toFixed of
// |(now - before) / before * 100|; the points' are toFixed of |(now - before) * 100|.)

import { wallOf } from "./zones";

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
export const NONE = "–";

export function formatCount(n: number): string {
  return String(Math.round(n));
}

export function formatPercent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)}%`;
}

export function formatSeconds(s: number): string {
  return `${s.toFixed(1)} s`;
}

export function formatNumber(x: number): string {
  return String(Math.round(x * 100) / 100);
}

// "picked_up" -> "Picked up"
export function humanize(name: string): string {
  const words = name.replace(/[_-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// ---- changes against the previous period ----------------------------------------------

const sign = (x: number) => (x > 0 ? "+" : x < 0 ? "−" : "");

function relative(now: number, before: number): string {
  return before === 0
    ? "n/a"
    : `${sign(now - before)}${Math.abs(((now - before) / before) * 100).toFixed(1)}%`;
}

export function countChange(now: number, before: number): string {
  return `${sign(now - before)}${formatCount(Math.abs(now - before))} (${relative(now, before)})`;
}

export function secondsChange(now: number, before: number): string {
  return `${sign(now - before)}${Math.abs(now - before).toFixed(1)} s (${relative(now, before)})`;
}

export function rateChange(now: number, before: number): string {
  return before === 0 ? "n/a" : `${sign(now - before)}${Math.abs((now - before) * 100).toFixed(1)} pp`;
}

// ---- spans and times -------------------------------------------------------------------

// A span in the two largest units: "0 s", "42 s", "3 min 5 s", "2 h 4 min", "3 d 1 h".
export function formatLag(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

// Time to convert: null (no journey reached the step) shows as a dash.
export function formatSpan(seconds: number | null): string {
  return seconds === null ? NONE : formatLag(Math.floor(seconds) * 1000);
}

const pad = (n: number) => String(n).padStart(2, "0");

export function formatTime(d: Date, tz: string): string {
  const w = wallOf(tz, d.getTime());
  return `${pad(w.hour)}:${pad(w.minute)}:${pad(w.second)}`;
}

export function formatDate(d: Date, tz: string): string {
  const w = wallOf(tz, d.getTime());
  return `${w.year}-${pad(w.month)}-${pad(w.day)}`;
}

export function formatDateTime(d: Date, tz: string): string {
  const w = wallOf(tz, d.getTime());
  return `${formatDate(d, tz)} ${pad(w.hour)}:${pad(w.minute)}`;
}

// A bucket start as the API writes it, in the answer's zone ("2026-11-30T10:00:00+05:30"
// or "...Z"): its wall time is the text before the offset.
export function formatPointTime(t: string): string {
  return `${t.slice(0, 10)} ${t.slice(11, 16)}`;
}

// Chart ticks: "Nov 30" for daily buckets; "10:00" for hourly ones, or "Nov 30 10:00"
// when the chart spans more than one day.
export function formatBucket(t: string, interval: "hour" | "day", manyDays = false): string {
  const day = `${MONTHS[Number(t.slice(5, 7)) - 1]} ${Number(t.slice(8, 10))}`;
  if (interval === "day") return day;
  return manyDays ? `${day} ${t.slice(11, 16)}` : t.slice(11, 16);
}

// "complete up to 10:42:03 Europe/Berlin, 3 s behind"; the date is added when it is not
// today there.
export function describeAsOf(asOf: string | null, now: Date, tz: string): string {
  if (asOf === null) return "completeness unknown: no watermark reported yet";
  const d = new Date(asOf);
  if (Number.isNaN(d.getTime())) return `complete up to ${asOf}`;
  const day = formatDate(d, tz) === formatDate(now, tz) ? "" : `${formatDate(d, tz)} `;
  return `complete up to ${day}${formatTime(d, tz)} ${tz}, ${formatLag(now.getTime() - d.getTime())} behind`;
}
