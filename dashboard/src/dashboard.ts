// Loads everything one view shows, in parallel, and derives what the panels need.
// A 401 from any request aborts the load (the page then asks for a key); any other
// failure is kept per part, so the rest of the page still shows what did answer.

import {
  ApiError,
  type Auth,
  type Breakdown,
  type Campaigns,
  fetchBreakdown,
  fetchCampaigns,
  fetchHeatmap,
  fetchOverview,
  fetchTimeToConvert,
  fetchTimeseries,
  fetchUsage,
  type Heatmap,
  type Overview,
  type Report,
  type Scope,
  type TimeToConvert,
  type Usage,
} from "./api";
import { type Range, resolveRange, type ViewState } from "./state";

export const REFRESH_MS = 5000;
export const SERIES = ["conversations", "engaged", "intents"] as const;
export type SeriesName = (typeof SERIES)[number];
export type SeriesRow = { t: string } & Record<SeriesName, number>;

// The parts of a view, each null when its request failed.
export interface Parts {
  overview: Overview | null;
  series: SeriesRow[] | null;
  campaigns: Campaigns | null;
  usage: Usage | null;
  timeToConvert: TimeToConvert | null;
  heatmap: Heatmap | null;
  breakdown: Breakdown | null;
}
const PARTS = ["overview", "series", "campaigns", "usage", "timeToConvert", "heatmap", "breakdown"] as const;

export interface DashboardData extends Parts {
  range: Range;
  errors: ApiError[];
  asOf: string | null; // the oldest watermark among the answers: all numbers are complete up to it
  sources: string[];
  loadedAt: Date;
}

// What the loaded numbers depend on: not which drop-off list is open, nor what the
// heatmap's cells show, so toggling those reloads nothing.
export function loadKey(auth: Auth, view: ViewState): string {
  return JSON.stringify([auth, { ...view, drop: null, heat: null }]);
}

const value = <T>(r: PromiseSettledResult<T>): T | null => (r.status === "fulfilled" ? r.value : null);

export async function loadDashboard(
  auth: Auth,
  view: ViewState,
  now: Date,
  signal?: AbortSignal,
): Promise<DashboardData> {
  const range = resolveRange(view, now);
  const scope: Scope = { range, campaign: view.campaign };
  const options = { order: view.order, window: view.window };
  const [overview, campaigns, usage, timeToConvert, heatmap, breakdown, ...series] = await Promise.allSettled(
    [
      fetchOverview(auth, scope, options, signal),
      fetchCampaigns(auth, range, signal),
      fetchUsage(auth, range, signal),
      fetchTimeToConvert(auth, scope, options, signal),
      fetchHeatmap(auth, scope, view.tz, signal),
      fetchBreakdown(auth, scope, view.by, signal),
      ...SERIES.map((metric) => fetchTimeseries(auth, scope, metric, view.interval, view.tz, signal)),
    ],
  );
  const all = [overview, campaigns, usage, timeToConvert, heatmap, breakdown, ...series];
  const errors: ApiError[] = [];
  for (const r of all) {
    if (r.status === "fulfilled") continue;
    if (!(r.reason instanceof ApiError) || r.reason.status === 401) throw r.reason;
    errors.push(r.reason);
  }
  const reports = all.flatMap((r) => (r.status === "fulfilled" ? [r.value as Report] : []));
  const seriesOk = series.every((r) => r.status === "fulfilled");
  return {
    range,
    overview: value(overview),
    campaigns: value(campaigns),
    usage: value(usage),
    timeToConvert: value(timeToConvert),
    heatmap: value(heatmap),
    breakdown: value(breakdown),
    series: seriesOk ? mergeSeries(series.map((r) => value(r)?.points ?? [])) : null,
    errors: uniqueErrors(errors),
    asOf: oldestAsOf(reports),
    sources: [...new Set(reports.map((r) => r.source))].sort(),
    loadedAt: now,
  };
}

// After a failed refresh, the parts that did not answer keep their last numbers, and the
// watermark shown is the older one: the page then says honestly how stale it is.
export function keepStale(previous: DashboardData, next: DashboardData): DashboardData {
  const stale = PARTS.some((k) => next[k] === null && previous[k] !== null);
  if (!stale) return next;
  const parts = Object.fromEntries(PARTS.map((k) => [k, next[k] ?? previous[k]])) as unknown as Parts;
  return {
    ...next,
    ...parts,
    asOf: oldestAsOf([{ as_of: previous.asOf }, { as_of: next.asOf }]),
    sources: [...new Set([...previous.sources, ...next.sources])].sort(),
    loadedAt: previous.loadedAt,
  };
}

// One row per bucket start, one column per metric (the API zero-fills every series).
export function mergeSeries(pointLists: { t: string; value: number }[][]): SeriesRow[] {
  const rows = new Map<string, SeriesRow>();
  pointLists.forEach((points, i) => {
    const name = SERIES[i];
    if (!name) return;
    for (const p of points) {
      const row = rows.get(p.t) ?? { t: p.t, conversations: 0, engaged: 0, intents: 0 };
      row[name] = p.value;
      rows.set(p.t, row);
    }
  });
  return [...rows.values()].sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
}

export function oldestAsOf(reports: { as_of: string | null }[]): string | null {
  let oldest: string | null = null;
  for (const r of reports) {
    if (r.as_of !== null && (oldest === null || Date.parse(r.as_of) < Date.parse(oldest))) oldest = r.as_of;
  }
  return oldest;
}

function uniqueErrors(errors: ApiError[]): ApiError[] {
  const seen = new Set<string>();
  return errors.filter((e) => !seen.has(e.message) && seen.add(e.message));
}

// Intents by count descending, then label (the order of /analytics/intents).
export function sortedIntents(overview: Overview): { label: string; count: number; share: number }[] {
  return Object.entries(overview.intents.by_label)
    .map(([label, v]) => ({ label, count: v.count, share: v.share }))
    .sort((a, b) => b.count - a.count || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
}

// "No events in this range": nothing the campaign-scoped panels would draw. Usage belongs
// to the whole tenant, so it only counts when no campaign is selected.
export function isEmpty(data: DashboardData, campaign: string | null): boolean {
  const o = data.overview;
  if (!o) return false;
  const nothing =
    o.conversations.total === 0 && o.intents.total === 0 && o.funnel.every((s) => s.customers === 0);
  const noUsage = campaign !== null || (data.usage !== null && Object.keys(data.usage.usage).length === 0);
  return nothing && noUsage;
}
