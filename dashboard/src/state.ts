// The view's state lives in the query string so that a view can be shared and reloaded:
//   ?tenant=acme&campaign=spring&range=7d&interval=hour
//   ?range=custom&from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z&interval=day
// `tenant` is only meaningful for admin keys. The API key is never written back: it is
// taken from `?key=` once on load (see takeKey) and kept in sessionStorage.

export type Preset = "24h" | "7d" | "30d" | "custom";
export type Interval = "hour" | "day";

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
  from: string | null; // custom range only, RFC 3339
  to: string | null;
  interval: Interval;
}

export interface Range {
  from: Date;
  to: Date;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const OWN_PARAMS = ["tenant", "campaign", "range", "from", "to", "interval", "key"];

// 30 daily points read better than 720 hourly ones, and the API limits hourly ranges.
export function defaultInterval(preset: Preset): Interval {
  return preset === "30d" ? "day" : "hour";
}

function isPreset(value: string | null): value is Preset {
  return PRESETS.some((p) => p.value === value);
}

function validDate(value: string | null): value is string {
  return value !== null && value !== "" && !Number.isNaN(Date.parse(value));
}

export function parseState(search: string): ViewState {
  const q = new URLSearchParams(search);
  const range = q.get("range");
  let preset: Preset = isPreset(range) ? range : "24h";
  const from = q.get("from");
  const to = q.get("to");
  // A custom range without two readable dates is not a range: fall back to the default.
  if (preset === "custom" && !(validDate(from) && validDate(to))) preset = "24h";
  const interval = q.get("interval");
  return {
    tenant: q.get("tenant") || null,
    campaign: q.get("campaign") || null,
    preset,
    from: preset === "custom" ? from : null,
    to: preset === "custom" ? to : null,
    interval: interval === "hour" || interval === "day" ? interval : defaultInterval(preset),
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

// Presets are aligned to UTC buckets, so the rollups can answer them exactly and every
// chart bucket is whole. "Last 24 hours" is the 24 UTC hours ending with the current
// one. "Last 7/30 days" ends with the current hour when the interval is hourly, and is
// the 7/30 whole UTC days ending with today when it is daily. `to` is the end of the
// current bucket, a little in the future (ranges are half-open).
export function resolveRange(state: ViewState, now: Date): Range {
  if (state.preset === "custom" && validDate(state.from) && validDate(state.to)) {
    return { from: new Date(state.from), to: new Date(state.to) };
  }
  const days = state.preset === "7d" ? 7 : state.preset === "30d" ? 30 : 1;
  const bucket = days > 1 && state.interval === "day" ? DAY : HOUR;
  const to = Math.floor(now.getTime() / bucket) * bucket + bucket;
  return { from: new Date(to - days * DAY), to: new Date(to) };
}

// RFC 3339 in UTC without milliseconds, as the API expects: 2026-11-30T10:00:00Z.
export function toRfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// <input type="datetime-local"> values are read and written as UTC ("2026-11-30T10:00").
export function toLocalInput(d: Date): string {
  return d.toISOString().slice(0, 16);
}

export function fromLocalInput(value: string): Date | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value)) return null;
  const d = new Date(`${value}Z`);
  return Number.isNaN(d.getTime()) ? null : d;
}
