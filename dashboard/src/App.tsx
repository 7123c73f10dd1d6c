import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, type Auth, fetchMe, fetchTenants, type Me } from "./api";
import { AuthPrompt } from "./components/AuthPrompt";
import { BreakdownPanel } from "./components/BreakdownPanel";
import { Controls } from "./components/Controls";
import { DropoffPanel } from "./components/DropoffPanel";
import { ErrorBox } from "./components/ErrorBox";
import { FunnelPanel } from "./components/FunnelPanel";
import { HeatmapPanel } from "./components/HeatmapPanel";
import { IntentsPanel } from "./components/IntentsPanel";
import { LiveStatus } from "./components/LiveStatus";
import { OverviewCards } from "./components/OverviewCards";
import { TimeseriesPanel } from "./components/TimeseriesPanel";
import { UsagePanel } from "./components/UsagePanel";
import {
  type DashboardData,
  isEmpty,
  keepStale,
  loadDashboard,
  loadKey,
  REFRESH_MS,
  sortedIntents,
} from "./dashboard";
import { parseState, resolveRange, stateToSearch, takeKey, type ViewState } from "./state";
import { browserZone } from "./zones";

const KEY_STORAGE = "pulse.apiKey";

type Session =
  | { status: "checking" }
  | { status: "key-required"; message: string | null }
  | { status: "failed"; error: ApiError }
  | { status: "ready"; me: Me; tenants: string[] | null };

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the key then lives only in memory
  }
}

// `?key=` moves from the address bar into sessionStorage, once, on load.
function initialKey(): string | null {
  const { key, search } = takeKey(window.location.search);
  if (key) {
    storage()?.setItem(KEY_STORAGE, key);
    window.history.replaceState(
      window.history.state,
      "",
      window.location.pathname + search + window.location.hash,
    );
    return key;
  }
  return storage()?.getItem(KEY_STORAGE) ?? null;
}

function writeUrl(view: ViewState, push: boolean) {
  const url = window.location.pathname + stateToSearch(view, window.location.search) + window.location.hash;
  if (url === window.location.pathname + window.location.search + window.location.hash) return;
  if (push) window.history.pushState(null, "", url);
  else window.history.replaceState(null, "", url);
}

export function App() {
  const [key, setKey] = useState(initialKey);
  const [view, setView] = useState(() => parseState(window.location.search, browserZone()));
  const [session, setSession] = useState<Session>({ status: "checking" });
  const [live, setLive] = useState(true);
  const [attempt, setAttempt] = useState(0);

  const navigate = useCallback((next: ViewState, push = true) => {
    setView(next);
    writeUrl(next, push);
  }, []);

  useEffect(() => {
    writeUrl(view, false); // show the full, shareable state from the start
    const onPop = () => setView(parseState(window.location.search, browserZone()));
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []); // once, on load

  // Who is this key? Admin keys also get the tenant list.
  useEffect(() => {
    const ctrl = new AbortController();
    setSession((s) => (s.status === "failed" ? s : { status: "checking" })); // a retry keeps the error up
    (async () => {
      const me = await fetchMe({ key, tenant: null }, ctrl.signal);
      const tenants =
        me.role === "admin" ? (await fetchTenants({ key, tenant: null }, ctrl.signal)).tenants : null;
      setSession({ status: "ready", me, tenants });
    })().catch((err: unknown) => {
      if (ctrl.signal.aborted) return;
      if (err instanceof ApiError && err.status === 401)
        setSession({ status: "key-required", message: key ? err.message : null });
      else if (err instanceof ApiError) setSession({ status: "failed", error: err });
      else throw err;
    });
    return () => ctrl.abort();
  }, [key, attempt]);

  // The API may not be up yet (503 until ready, or not listening): try again.
  useEffect(() => {
    if (session.status !== "failed") return;
    const timer = window.setTimeout(() => setAttempt((a) => a + 1), REFRESH_MS);
    return () => window.clearTimeout(timer);
  }, [session]);

  // Tenant keys never name a tenant; admin keys default to the first tenant.
  const me = session.status === "ready" ? session : null;
  useEffect(() => {
    if (!me) return;
    if (me.me.role !== "admin" && view.tenant) navigate({ ...view, tenant: null }, false);
    if (me.me.role === "admin" && !view.tenant && me.tenants?.[0])
      navigate({ ...view, tenant: me.tenants[0] }, false);
  }, [me, view, navigate]);

  const auth: Auth | null =
    me && (me.me.role !== "admin" || view.tenant)
      ? { key, tenant: me.me.role === "admin" ? view.tenant : null }
      : null;

  const onUnauthorized = useCallback(
    (err: ApiError) => setSession({ status: "key-required", message: err.message }),
    [],
  );
  const data = useDashboard(auth, view, live, onUnauthorized);

  const changeKey = (next: string | null) => {
    if (next) storage()?.setItem(KEY_STORAGE, next);
    else storage()?.removeItem(KEY_STORAGE);
    setKey(next);
    // In the same render as the key: nothing may be fetched with the new key and old role.
    setSession({ status: "checking" });
  };

  return (
    <>
      <header className="top">
        <div className="brand">
          <span className="logo" aria-hidden="true" />
          <h1>Pulse</h1>
          <span className="muted">campaign analytics</span>
        </div>
        {me && (
          <div className="who">
            <span className="muted">
              {me.me.role === "admin" ? "Admin key" : `Tenant ${me.me.tenant_id ?? ""}`}
            </span>
            {key && (
              <button type="button" className="link" onClick={() => changeKey(null)}>
                Forget key
              </button>
            )}
          </div>
        )}
      </header>
      <main>
        {session.status === "checking" && (
          <p className="status" role="status">
            Connecting to the Pulse API…
          </p>
        )}
        {session.status === "key-required" && <AuthPrompt message={session.message} onKey={changeKey} />}
        {session.status === "failed" && <ErrorBox errors={[session.error]} />}
        {me && (
          <Dashboard
            auth={auth}
            view={view}
            data={data}
            tenants={me.tenants}
            noTenants={me.me.role === "admin" && me.tenants?.length === 0}
            live={live}
            onLive={() => setLive(!live)}
            onChange={navigate}
          />
        )}
      </main>
    </>
  );
}

interface DashboardProps {
  auth: Auth | null;
  view: ViewState;
  data: DashboardData | null; // null while the current view loads
  tenants: string[] | null;
  noTenants: boolean;
  live: boolean;
  onLive: () => void;
  onChange: (next: ViewState) => void;
}

function Dashboard({ auth, view, data, tenants, noTenants, live, onLive, onChange }: DashboardProps) {
  const range = data?.range ?? resolveRange(view, new Date());
  const empty = data !== null && isEmpty(data, view.campaign);
  const funnel = data?.overview?.funnel ?? null;
  const dropAt = view.drop !== null && funnel && view.drop <= funnel.length ? view.drop : null;
  return (
    <>
      <Controls
        view={view}
        range={range}
        tenants={tenants}
        campaigns={data?.campaigns ?? null}
        onChange={onChange}
      />
      {noTenants && <p className="notice">No tenant has sent events yet.</p>}
      {!data && !noTenants && (
        <p className="status" role="status">
          Loading…
        </p>
      )}
      {data && (
        <>
          <LiveStatus
            asOf={data.asOf}
            sources={data.sources}
            range={data.range}
            loadedAt={data.loadedAt}
            tz={view.tz}
            live={live}
            onToggle={onLive}
          />
          <ErrorBox errors={data.errors} />
          {empty && (
            <p className="notice" data-testid="empty" role="status">
              No events in this range{view.campaign ? ` for campaign ${view.campaign}` : ""}.
            </p>
          )}
          {data.overview && <OverviewCards overview={data.overview} tz={view.tz} />}
          <div className="grid">
            {!empty && data.series && (
              <TimeseriesPanel rows={data.series} interval={view.interval} tz={view.tz} />
            )}
            {!empty && funnel && (
              <FunnelPanel
                steps={funnel}
                times={data.timeToConvert?.steps ?? null}
                view={view}
                onChange={onChange}
              />
            )}
            {!empty && data.overview && (
              <IntentsPanel total={data.overview.intents.total} intents={sortedIntents(data.overview)} />
            )}
            {!empty && auth && funnel && dropAt !== null && (
              <DropoffPanel
                auth={auth}
                scope={{ range: data.range, campaign: view.campaign }}
                options={{ order: view.order, window: view.window }}
                steps={funnel.map((s) => s.step)}
                step={dropAt}
                dropped={(funnel[dropAt - 2]?.customers ?? 0) - (funnel[dropAt - 1]?.customers ?? 0)}
                tz={view.tz}
                onClose={() => onChange({ ...view, drop: null })}
              />
            )}
            {!empty && data.heatmap && (
              <HeatmapPanel heatmap={data.heatmap} view={view} onChange={onChange} />
            )}
            {!empty && data.breakdown && (
              <BreakdownPanel breakdown={data.breakdown} view={view} onChange={onChange} />
            )}
            {data.usage && <UsagePanel usage={data.usage} />}
          </div>
        </>
      )}
    </>
  );
}

// Loads the view, then again every REFRESH_MS while live. Answers for an older view are
// dropped (the request is aborted), so a slow answer never overwrites a newer view.
function useDashboard(
  auth: Auth | null,
  view: ViewState,
  live: boolean,
  onUnauthorized: (err: ApiError) => void,
): DashboardData | null {
  const viewKey = auth ? loadKey(auth, view) : null;
  const [state, setState] = useState<{ key: string; data: DashboardData } | null>(null);
  const current = useRef(state);
  current.current = state;

  useEffect(() => {
    if (!auth || !viewKey) return;
    // Pausing keeps what is shown; it does not need a fetch.
    if (!live && current.current?.key === viewKey) return;
    const ctrl = new AbortController();
    let timer: number | undefined;
    const tick = async () => {
      try {
        const data = await loadDashboard(auth, view, new Date(), ctrl.signal);
        if (ctrl.signal.aborted) return;
        setState((prev) => ({
          key: viewKey,
          data: prev?.key === viewKey ? keepStale(prev.data, data) : data,
        }));
      } catch (err) {
        if (ctrl.signal.aborted) return;
        if (err instanceof ApiError && err.status === 401) return onUnauthorized(err);
        throw err;
      }
      if (live) timer = window.setTimeout(tick, REFRESH_MS);
    };
    void tick();
    return () => {
      ctrl.abort();
      window.clearTimeout(timer);
    };
    // viewKey stands for auth and view.
  }, [viewKey, live, onUnauthorized]);

  return state && state.key === viewKey ? state.data : null;
}
