// The view's state lives in the query string so that a view can be shared and reloaded:
//   ?tenant=acme&campaign=spring&range=7d&interval=hour&tz=Europe/Berlin
//   ?range=custom&from=2026-11-01T00:00&to=2026-11-08T00:00&interval=day&tz=Asia/Kolkata
//   ...&order=sequence&window=86400&by=metadata.agent&drop=2&heat=engagement
// `tenant` is only meaningful for admin keys. The API key is never written back: it is
// taken from `?key=` once on load (see takeKey) and kept in sessionStorage. Every choice
// is written, defaults included, so that a shared link shows the same view whatever the
// browser's time zone.

import { dayStart, fromWall, hourStart, isZone, wallOf } from "./zones";

export type Preset = "24h" | "7d" | "30d" | "custom";
export type Interval = "hour" | "day";
export type Order = "any" | "sequence";
export type HeatValue = "conversations" | "engagement";

export const PRESETS: readonly { value: Preset; label: string }[] = [
  { value: "24h", label: "Last 24 hours" },
  { value: "7d", label: "Last 7 days" },
  { value: "30d", label: "Last 30 days" },
  { value: "custom", label: "Custom range" },
];

export interface ViewState {
  tenant: string | null;
  campaign: string | null; // null: all campaigns
  preset: Preset;
  // Custom range only: a wall time in `tz` ("2026-11-01T00:00"), or an instant with an
  // offset ("2026-11-01T00:00:00Z", as older links carry).
  from: string | null;
  to: string | null;
  interval: Interval;
  tz: string; // IANA name: day and hour buckets, the heatmap, the meaning of custom dates
  order: Order; // funnel options
  window: number | null; // seconds
  by: string; // breakdown: channel, campaign or metadata.<key>
  drop: number | null; // the funnel step whose drop-off list is open
  heat: HeatValue; // what the heatmap's cells show
}

export interface Range {
  from: Date;
  to: Date;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const OWN_PARAMS = [
  "tenant",
  "campaign",
  "range",
  "from",
  "to",
  "interval",
  "tz",
  "order",
  "window",
  "by",
  "drop",
  "heat",
  "key",
];
// Limits on the window, the metadata key and the step are the API's to enforce: its 400
// names the parameter and what it accepts, and the page shows that message.

// 30 daily points read better than 720 hourly ones, and the API limits hourly ranges.
export function defaultInterval(preset: Preset): Interval {
  return preset === "30d" ? "day" : "hour";
}

function isPreset(value: string | null): value is Preset {
  return PRESETS.some((p) => p.value === value);
}

const WALL = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?)?$/;

// A custom range bound: a wall time in `tz` (a date alone is local midnight), or an
// RFC 3339 instant with its offset. Null when it is neither.
export function readWhen(value: string | null, tz: string): Date | null {
  if (value === null || value === "") return null;
  const m = WALL.exec(value);
  if (m) {
    const [year, month, day, hour, minute, second] = m.slice(1).map((x) => Number(x ?? 0)) as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59)
      return null;
    return new Date(fromWall(tz, { year, month, day, hour, minute, second }));
  }
  if (!/(Z|[+-]\d{2}:\d{2})$/.test(value)) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : new Date(t);
}

export function isBreakdown(by: string): boolean {
  if (by === "channel" || by === "campaign") return true;
  return by.startsWith("metadata.") && by.length > "metadata.".length;
}

function wholeNumber(value: string | null, low: number): number | null {
  if (value === null || !/^\d{1,15}$/.test(value)) return null;
  const n = Number(value);
  return n >= low ? n : null;
}

export function parseState(search: string, defaultTz: string): ViewState {
  const q = new URLSearchParams(search);
  const tzParam = q.get("tz");
  const tz = tzParam && isZone(tzParam) ? tzParam : defaultTz;
  const range = q.get("range");
  let preset: Preset = isPreset(range) ? range : "24h";
  const from = q.get("from");
  const to = q.get("to");
  // A custom range without two readable times is not a range: fall back to the default.
  if (preset === "custom" && !(readWhen(from, tz) && readWhen(to, tz))) preset = "24h";
  const interval = q.get("interval");
  const by = q.get("by") ?? "";
  const heat = q.get("heat");
  return {
    tenant: q.get("tenant") || null,
    campaign: q.get("campaign") || null,
    preset,
    from: preset === "custom" ? from : null,
    to: preset === "custom" ? to : null,
    interval: interval === "hour" || interval === "day" ? interval : defaultInterval(preset),
    tz,
    order: q.get("order") === "sequence" ? "sequence" : "any",
    window: wholeNumber(q.get("window"), 1),
    by: isBreakdown(by) ? by : "channel",
    drop: wholeNumber(q.get("drop"), 2),
    heat: heat === "engagement" ? "engagement" : "conversations",
  };
}

// Writes the state over `current` (the page's query string), keeping parameters that
// are not ours and dropping `key` whatever happens.
export function stateToSearch(state: ViewState, current = ""): string {
  const q = new URLSearchParams(current);
  for (const name of OWN_PARAMS) q.delete(name);
  if (state.tenant) q.set("tenant", state.tenant);
  if (state.campaign) q.set("campaign", state.campaign);
  q.set("range", state.preset);
  if (state.preset === "custom") {
    q.set("from", state.from ?? "");
    q.set("to", state.to ?? "");
  }
  q.set("interval", state.interval);
  q.set("tz", state.tz);
  q.set("order", state.order);
  if (state.window !== null) q.set("window", String(state.window));
  q.set("by", state.by);
  if (state.drop !== null) q.set("drop", String(state.drop));
  q.set("heat", state.heat);
  const text = q.toString();
  return text ? `?${text}` : "";
}

// Takes `?key=` out of a query string: returns the key and the query string without it.
export function takeKey(search: string): { key: string | null; search: string } {
  const q = new URLSearchParams(search);
  const key = q.get("key");
  q.delete("key");
  const rest = q.toString();
  return { key: key || null, search: rest ? `?${rest}` : "" };
}

// Presets are whole buckets of the view's time zone, so every chart bucket is whole (and
// in UTC, the rollups can answer them exactly). "Last 24 hours" is the 24 hours ending
// with the current local hour. "Last 7/30 days" ends with the current hour when the
// interval is hourly, and is the 7/30 local days ending with today when it is daily
// (a day across a DST change is 23 or 25 hours). `to` is the end of the current bucket, a
// little in the future (ranges are half-open).
export function resolveRange(state: ViewState, now: Date): Range {
  if (state.preset === "custom") {
    const from = readWhen(state.from, state.tz);
    const to = readWhen(state.to, state.tz);
    if (from && to) return { from, to };
  }
  const days = state.preset === "7d" ? 7 : state.preset === "30d" ? 30 : 1;
  if (days > 1 && state.interval === "day") {
    const to = dayStart(state.tz, now.getTime(), 1);
    return { from: new Date(dayStart(state.tz, to, -days)), to: new Date(to) };
  }
  const to = hourStart(state.tz, now.getTime()) + HOUR;
  return { from: new Date(to - days * DAY), to: new Date(to) };
}

// RFC 3339 in UTC without milliseconds, as the API expects: 2026-11-30T10:00:00Z.
export function toRfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

const pad = (n: number) => String(n).padStart(2, "0");

// <input type="datetime-local"> values are wall times in the view's zone ("2026-11-30T10:00").
export function toLocalInput(d: Date, tz: string): string {
  const w = wallOf(tz, d.getTime());
  return `${w.year}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}`;
}

export function fromLocalInput(value: string, tz: string): Date | null {
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value) ? readWhen(value, tz) : null;
}

// A custom range bound as the datetime-local input shows it in `tz` ("" if unreadable).
export function wallInput(value: string | null, tz: string): string {
  const d = readWhen(value, tz);
  return d ? toLocalInput(d, tz) : "";
}

// The funnel window's input: an amount in the largest unit that divides it.
export const WINDOW_UNITS = [
  { value: "d", label: "days", seconds: 86_400 },
  { value: "h", label: "hours", seconds: 3_600 },
  { value: "min", label: "minutes", seconds: 60 },
  { value: "s", label: "seconds", seconds: 1 },
] as const;

export function splitWindow(seconds: number | null): { amount: string; unit: string } {
  if (seconds === null) return { amount: "", unit: "h" };
  const unit = WINDOW_UNITS.find((u) => seconds % u.seconds === 0) ?? WINDOW_UNITS[3];
  return { amount: String(seconds / unit.seconds), unit: unit.value };
}
