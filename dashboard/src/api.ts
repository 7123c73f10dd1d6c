// A small typed client for the Pulse HTTP API (CONTRACT.md section 4). Every request
// carries the bearer key; admin keys name the tenant with `?tenant=`. Every failure,
// including a network error or a body that is not the API's JSON, becomes one ApiError.

import { type Interval, type Range, toRfc3339 } from "./state";

export class ApiError extends Error {
  constructor(
    readonly status: number, // 0 when the server could not be reached
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface Auth {
  key: string | null;
  tenant: string | null; // admin keys only
}

export interface Report {
  tenant_id: string;
  from: string;
  to: string;
  campaign_id: string | null;
  source: "rollups" | "lake" | "mixed";
  as_of: string | null;
}

export interface Me {
  role: "admin" | "tenant";
  tenant_id: string | null;
}

export interface FunnelStep {
  step: string;
  customers: number;
  conversion_from_previous: number;
  conversion_from_start: number;
}

export interface Overview extends Report {
  conversations: { total: number; calls: number; chats: number };
  engagement: {
    total_duration_s: number;
    avg_duration_s: number;
    engaged: number;
    engagement_rate: number;
  };
  intents: {
    total: number;
    intent_rate: number;
    by_label: Record<string, { count: number; share: number }>;
  };
  funnel: FunnelStep[];
}

export interface Timeseries extends Report {
  metric: string;
  interval: Interval;
  points: { t: string; value: number }[];
}

export interface Campaigns extends Report {
  campaigns: { campaign_id: string; conversations: number }[];
}

export interface Usage extends Report {
  usage: Record<string, number>;
}

type Params = Record<string, string | null | undefined>;

const MAX_ATTEMPTS = 5;

export function retryAfterMs(header: string | null): number {
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 10) * 1000 : 1000;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

export async function getJson<T>(path: string, params: Params, auth: Auth, signal?: AbortSignal): Promise<T> {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries({ ...params, tenant: auth.tenant })) {
    if (value != null && value !== "") q.set(name, value);
  }
  const query = q.toString();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (auth.key) headers.Authorization = `Bearer ${auth.key}`;
  let response: Response;
  for (let attempt = 1; ; attempt++) {
    try {
      // Relative: the API serves this page at `/`, and the page works under a prefix too.
      response = await fetch(`analytics/${path}${query ? `?${query}` : ""}`, { headers, signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ApiError(0, "network_error", "Cannot reach the Pulse API (network error). Is it running?");
    }
    // 429: this tenant's lake queries are all busy; the API says when to come back.
    if (response.status !== 429 || attempt >= MAX_ATTEMPTS) break;
    await sleep(retryAfterMs(response.headers.get("Retry-After")), signal);
  }
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: handled below
  }
  if (!response.ok) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiError(
      response.status,
      error?.code ?? "http_error",
      error?.message ?? `The API answered HTTP ${response.status} ${response.statusText}`.trim(),
    );
  }
  if (body === null) {
    throw new ApiError(response.status, "bad_response", "The API answered with something that is not JSON.");
  }
  return body as T;
}

const rangeParams = (range: Range) => ({ from: toRfc3339(range.from), to: toRfc3339(range.to) });

export const fetchMe = (auth: Auth, signal?: AbortSignal) =>
  getJson<Me>("me", {}, { key: auth.key, tenant: null }, signal);

export const fetchTenants = (auth: Auth, signal?: AbortSignal) =>
  getJson<{ tenants: string[] }>("tenants", {}, { key: auth.key, tenant: null }, signal);

// One campaign through the contract's campaign report; all campaigns through /overview.
export const fetchOverview = (auth: Auth, range: Range, campaign: string | null, signal?: AbortSignal) =>
  campaign
    ? getJson<Overview>(`campaign/${encodeURIComponent(campaign)}`, rangeParams(range), auth, signal)
    : getJson<Overview>("overview", rangeParams(range), auth, signal);

export const fetchTimeseries = (
  auth: Auth,
  metric: string,
  interval: Interval,
  range: Range,
  campaign: string | null,
  signal?: AbortSignal,
) => getJson<Timeseries>("timeseries", { metric, interval, ...rangeParams(range), campaign }, auth, signal);

export const fetchCampaigns = (auth: Auth, range: Range, signal?: AbortSignal) =>
  getJson<Campaigns>("campaigns", rangeParams(range), auth, signal);

export const fetchUsage = (auth: Auth, range: Range, signal?: AbortSignal) =>
  getJson<Usage>("usage", rangeParams(range), auth, signal);
