// Every number the page shows goes through here, so a test can recompute it from the
// API's answer and compare text exactly:
//   counts          plain integers, no grouping:        1234
//   rates, shares   percent with one decimal (JS toFixed, i.e. the double's exact value
//                   rounded, ties away from zero):      0.4567 -> "45.7%"
//   durations       seconds with one decimal and unit:  61.25 -> "61.3 s"
//   other numbers   (usage totals) at most 2 decimals:  12.5, 3, 0.33
//   times           UTC, 24-hour clock:                 "10:42:03 UTC"

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

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

const pad = (n: number) => String(n).padStart(2, "0");

export function formatUtcTime(d: Date): string {
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

export function formatUtcDate(d: Date): string {
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

export function formatUtcDateTime(d: Date): string {
  return `${formatUtcDate(d)} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
}

// Chart ticks: "Nov 30" for daily buckets; "10:00" for hourly ones, or "Nov 30 10:00"
// when the chart spans more than one day.
export function formatBucket(t: string, interval: "hour" | "day", manyDays = false): string {
  const d = new Date(t);
  const day = `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
  if (interval === "day") return day;
  return manyDays ? `${day} ${pad(d.getUTCHours())}:00` : `${pad(d.getUTCHours())}:00`;
}

// A duration in the two largest units: "0 s", "42 s", "3 min 5 s", "2 h 4 min", "3 d 1 h".
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

// "complete up to 10:42:03 UTC, 3 s behind"; the date is added when it is not today.
export function describeAsOf(asOf: string | null, now: Date): string {
  if (asOf === null) return "completeness unknown: no watermark reported yet";
  const d = new Date(asOf);
  if (Number.isNaN(d.getTime())) return `complete up to ${asOf}`;
  const day = formatUtcDate(d) === formatUtcDate(now) ? "" : `${formatUtcDate(d)} `;
  return `complete up to ${day}${formatUtcTime(d)}, ${formatLag(now.getTime() - d.getTime())} behind`;
}
