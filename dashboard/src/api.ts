// A small typed client for the Pulse HTTP API (CONTRACT.md section 4). Every request
// carries the bearer key; admin keys name the tenant with `?tenant=`. Every failure,
// including a network error or a body that is not the API's JSON, becomes one ApiError.
//
// The shapes are not written here: api.gen.ts is generated from the API's own
// /openapi.json (dashboard/api_types.py), so a path, a parameter or a field that the API
// renames breaks `npm run typecheck` instead of the page.

import type { components, paths } from "./api.gen";
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

type Schemas = components["schemas"];
export type Overview = Schemas["Overview"];
export type OverviewNumbers = Schemas["OverviewPrevious"];
export type FunnelStep = Schemas["FunnelStep"];
export type Timeseries = Schemas["Timeseries"];
export type Campaigns = Schemas["Campaigns"];
export type Usage = Schemas["Usage"];
export type Me = Schemas["Me"];
export type TimeToConvert = Schemas["TimeToConvert"];
export type StepTime = Schemas["StepTime"];
export type Customers = Schemas["Customers"];
export type Customer = Schemas["Customer"];
export type Heatmap = Schemas["Heatmap"];
export type HeatCell = Schemas["HeatCell"];
export type Breakdown = Schemas["Breakdown"];
export type GroupNumbers = Schemas["GroupNumbers"];
/** The envelope every report answer carries. */
export type Report = Pick<Overview, "tenant_id" | "from" | "to" | "campaign_id" | "source" | "as_of">;

// Typed GETs: `Path` is every path answering JSON, `Query<P>` its query parameters (the
// tenant comes from Auth), `PathParams<P>` the `{name}` parts of its path.
type Get<P extends keyof paths> = paths[P]["get"];
type JsonPath = {
  [P in keyof paths]: Get<P> extends { responses: { 200: { content: { "application/json": unknown } } } }
    ? P
    : never;
}[keyof paths];
export type Answer<P extends JsonPath> = Get<P>["responses"][200]["content"]["application/json"];
export type Query<P extends JsonPath> = Omit<NonNullable<Get<P>["parameters"]["query"]>, "tenant">;
type PathParams<P extends JsonPath> = Get<P>["parameters"] extends { path: infer T } ? T : never;
type Params<P extends JsonPath> = [PathParams<P>] extends [never]
  ? { query: Query<P> }
  : { query: Query<P>; path: PathParams<P> };

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

// The request's URL, relative: the API serves this page at `/`, and the page works under a
// prefix too. Empty and missing values are left out; numbers are written as digits.
export function requestUrl(
  path: string,
  query: Record<string, string | number | null | undefined>,
  pathParams: Record<string, string> = {},
  tenant: string | null = null,
): string {
  const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(pathParams[name] ?? ""));
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries({ ...query, tenant })) {
    if (value != null && value !== "") q.set(name, String(value));
  }
  const text = q.toString();
  return `${filled.replace(/^\//, "")}${text ? `?${text}` : ""}`;
}

async function send(
  url: string,
  accept: string,
  auth: Auth,
  signal?: AbortSignal,
  etag?: string,
): Promise<Response> {
  const headers: Record<string, string> = { Accept: accept };
  if (auth.key) headers.Authorization = `Bearer ${auth.key}`;
  if (etag) headers["If-None-Match"] = etag;
  for (let attempt = 1; ; attempt++) {
    let response: Response;
    try {
      response = await fetch(url, { headers, signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ApiError(0, "network_error", "Cannot reach the Pulse API (network error). Is it running?");
    }
    // 429: this tenant's lake queries are all busy; the API says when to come back.
    if (response.status !== 429 || attempt >= MAX_ATTEMPTS) return response;
    await sleep(retryAfterMs(response.headers.get("Retry-After")), signal);
  }
}

async function failure(response: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says it all
  }
  const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
  return new ApiError(
    response.status,
    error?.code ?? "http_error",
    error?.message ?? `The API answered HTTP ${response.status} ${response.statusText}`.trim(),
  );
}

// Dashboards ask the same URLs every few seconds. The last answer to each URL (per key)
// that came with an ETag is kept; the next request for that URL sends it as
// If-None-Match, and a 304 reuses the kept answer instead of a new body. Bounded, oldest
// first out; an answer without an ETag forgets the URL's entry.
export class AnswerCache {
  private readonly entries = new Map<string, { etag: string; body: unknown }>();

  constructor(readonly size: number) {}

  lookup(id: string): { etag: string; body: unknown } | undefined {
    const entry = this.entries.get(id);
    if (entry !== undefined) {
      this.entries.delete(id); // most recently used last
      this.entries.set(id, entry);
    }
    return entry;
  }

  keep(id: string, etag: string | null, body: unknown): void {
    this.entries.delete(id);
    if (etag === null) return;
    this.entries.set(id, { etag, body });
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.size) break;
      this.entries.delete(oldest);
    }
  }
}

export const answers = new AnswerCache(256);

export async function get<P extends JsonPath>(
  path: P,
  params: Params<P>,
  auth: Auth,
  signal?: AbortSignal,
): Promise<Answer<P>> {
  const pathParams = "path" in params ? (params.path as Record<string, string>) : {};
  const url = requestUrl(path, params.query as Record<string, string>, pathParams, auth.tenant);
  const id = `${auth.key ?? ""} ${url}`;
  const kept = answers.lookup(id);
  const response = await send(url, "application/json", auth, signal, kept?.etag);
  if (response.status === 304 && kept !== undefined) return kept.body as Answer<P>;
  if (!response.ok) throw await failure(response);
  let body: Answer<P>;
  try {
    body = (await response.json()) as Answer<P>;
  } catch {
    throw new ApiError(response.status, "bad_response", "The API answered with something that is not JSON.");
  }
  answers.keep(id, response.headers.get("ETag"), body);
  return body;
}

// The whole list of a step's journeys as CSV, and the file name the API suggests.
export async function getCustomersCsv(
  query: Query<"/analytics/funnel/customers">,
  auth: Auth,
  signal?: AbortSignal,
): Promise<{ name: string; blob: Blob }> {
  const url = requestUrl("/analytics/funnel/customers", { ...query, format: "csv" }, {}, auth.tenant);
  const response = await send(url, "text/csv", auth, signal);
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") ?? "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? "customers.csv";
  return { name, blob: await response.blob() };
}

const noTenant = (auth: Auth): Auth => ({ key: auth.key, tenant: null });

export const fetchMe = (auth: Auth, signal?: AbortSignal) =>
  get("/analytics/me", { query: {} }, noTenant(auth), signal);

export const fetchTenants = (auth: Auth, signal?: AbortSignal) =>
  get("/analytics/tenants", { query: {} }, noTenant(auth), signal);

// The parameters every report of one view shares.
export interface Scope {
  range: Range;
  campaign: string | null;
}

export interface FunnelOptions {
  order: "any" | "sequence";
  window: number | null;
}

const scopeQuery = ({ range, campaign }: Scope) => ({
  from: toRfc3339(range.from),
  to: toRfc3339(range.to),
  campaign: campaign ?? undefined,
});
const rangeQuery = (range: Range) => ({ from: toRfc3339(range.from), to: toRfc3339(range.to) });
const funnelQuery = ({ order, window }: FunnelOptions) => ({ order, window: window ?? undefined });

// One campaign through the contract's campaign report; all campaigns through /overview.
// Both with the previous period, for the cards' changes.
export const fetchOverview = (auth: Auth, scope: Scope, options: FunnelOptions, signal?: AbortSignal) => {
  const query = { ...rangeQuery(scope.range), ...funnelQuery(options), compare: "previous" as const };
  return scope.campaign
    ? get("/analytics/campaign/{campaign_id}", { path: { campaign_id: scope.campaign }, query }, auth, signal)
    : get("/analytics/overview", { query }, auth, signal);
};

export const fetchTimeseries = (
  auth: Auth,
  scope: Scope,
  metric: string,
  interval: Interval,
  tz: string,
  signal?: AbortSignal,
) => get("/analytics/timeseries", { query: { ...scopeQuery(scope), metric, interval, tz } }, auth, signal);

export const fetchCampaigns = (auth: Auth, range: Range, signal?: AbortSignal) =>
  get("/analytics/campaigns", { query: rangeQuery(range) }, auth, signal);

export const fetchUsage = (auth: Auth, range: Range, signal?: AbortSignal) =>
  get("/analytics/usage", { query: rangeQuery(range) }, auth, signal);

export const fetchTimeToConvert = (auth: Auth, scope: Scope, options: FunnelOptions, signal?: AbortSignal) =>
  get(
    "/analytics/time-to-convert",
    { query: { ...scopeQuery(scope), ...funnelQuery(options) } },
    auth,
    signal,
  );

export const fetchHeatmap = (auth: Auth, scope: Scope, tz: string, signal?: AbortSignal) =>
  get("/analytics/heatmap", { query: { ...scopeQuery(scope), tz } }, auth, signal);

export const fetchBreakdown = (auth: Auth, scope: Scope, by: string, signal?: AbortSignal) =>
  get("/analytics/breakdown", { query: { ...scopeQuery(scope), by } }, auth, signal);

// The journeys that dropped off at `step`: a page of them, or (customersCsv) all as CSV.
const droppedQuery = (scope: Scope, options: FunnelOptions, step: number) => ({
  ...scopeQuery(scope),
  ...funnelQuery(options),
  step,
  outcome: "dropped" as const,
});

export const fetchDropped = (
  auth: Auth,
  scope: Scope,
  options: FunnelOptions,
  step: number,
  cursor: string | null,
  limit: number,
  signal?: AbortSignal,
) =>
  get(
    "/analytics/funnel/customers",
    { query: { ...droppedQuery(scope, options, step), limit, cursor: cursor ?? undefined } },
    auth,
    signal,
  );

export const fetchDroppedCsv = (auth: Auth, scope: Scope, options: FunnelOptions, step: number) =>
  getCustomersCsv(droppedQuery(scope, options, step), auth);
