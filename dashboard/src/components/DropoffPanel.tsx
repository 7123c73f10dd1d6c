import { useEffect, useRef, useState } from "react";
import {
  ApiError,
  type Auth,
  type Customer,
  fetchDropped,
  fetchDroppedCsv,
  type FunnelOptions,
  type Scope,
} from "../api";
import { formatCount, formatDateTime, humanize } from "../format";
import { ErrorBox } from "./ErrorBox";

export const PAGE_SIZE = 50;

interface Props {
  auth: Auth;
  scope: Scope; // the range and campaign the funnel above was loaded for
  options: FunnelOptions;
  steps: string[]; // labels, in order
  step: number; // 2..n: the journeys that reached step - 1 but not this one
  dropped: number; // how many, from the funnel
  tz: string;
  onClose: () => void;
}

interface Pages {
  customers: Customer[];
  next: string | null;
  error: ApiError | null;
  loading: boolean;
}

// The list a campaign owner calls back: loaded a page at a time (not refreshed every few
// seconds, so the rows do not move while they are read), and the whole list as CSV.
export function DropoffPanel({ auth, scope, options, steps, step, dropped, tz, onClose }: Props) {
  const [pages, setPages] = useState<Pages>({ customers: [], next: null, error: null, loading: true });
  const [csvProblem, setCsvProblem] = useState<ApiError | null>(null);
  const queryKey = JSON.stringify([auth, scope, options, step]);
  const current = useRef(queryKey);
  current.current = queryKey;

  // A page that answers after the query changed is dropped, so pages never mix queries.
  const load = (cursor: string | null) => {
    const asked = queryKey;
    setPages((p) => ({ ...p, loading: true }));
    fetchDropped(auth, scope, options, step, cursor, PAGE_SIZE).then(
      (page) => {
        if (current.current !== asked) return;
        setPages((p) => ({
          customers: cursor === null ? page.customers : [...p.customers, ...page.customers],
          next: page.next_cursor,
          error: null,
          loading: false,
        }));
      },
      (err: unknown) => {
        if (current.current !== asked) return;
        if (!(err instanceof ApiError)) throw err;
        setPages((p) => ({ ...p, error: err, loading: false }));
      },
    );
  };

  useEffect(() => {
    setPages({ customers: [], next: null, error: null, loading: true });
    load(null);
    // queryKey stands for auth, scope, options and step
  }, [queryKey]);

  const download = async () => {
    try {
      const { name, blob } = await fetchDroppedCsv(auth, scope, options, step);
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      setCsvProblem(null);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      setCsvProblem(err);
    }
  };

  const before = humanize(steps[step - 2] ?? "");
  const at = humanize(steps[step - 1] ?? "");
  const stepName = (k: number) => humanize(steps[k - 1] ?? String(k));
  return (
    <section
      className="panel panel-wide"
      id="dropoff-list"
      aria-labelledby="dropoff-title"
      data-panel="dropoff"
    >
      <div className="panel-head">
        <h2 id="dropoff-title">
          Dropped off at {at} ({formatCount(dropped)})
        </h2>
        <div className="inline">
          <button type="button" data-testid="dropoff-csv" onClick={() => void download()}>
            Download CSV
          </button>
          <button type="button" data-testid="dropoff-close" onClick={onClose}>
            Close
          </button>
        </div>
      </div>
      <p className="muted panel-note">
        Journeys of this funnel that reached {before} but not {at}; entry times in {tz}.
      </p>
      <ErrorBox errors={[pages.error, csvProblem].filter((e): e is ApiError => e !== null)} />
      <DropoffTable
        customers={pages.customers}
        loaded={!pages.loading && !pages.error}
        at={at}
        tz={tz}
        stepName={stepName}
      />
      <p className="dropoff-more">
        <span className="muted" data-testid="dropoff-shown" role="status">
          {pages.loading ? "Loading…" : `${formatCount(pages.customers.length)} shown`}
        </span>
        {pages.next !== null && (
          <button
            type="button"
            data-testid="dropoff-more"
            disabled={pages.loading}
            onClick={() => load(pages.next)}
          >
            Show {PAGE_SIZE} more
          </button>
        )}
      </p>
    </section>
  );
}

interface TableProps {
  customers: Customer[];
  loaded: boolean; // without error: an empty list then means nobody dropped off
  at: string;
  tz: string;
  stepName: (k: number) => string;
}

function DropoffTable({ customers, loaded, at, tz, stepName }: TableProps) {
  return (
    <div className="table-wrap">
      <table data-testid="dropoff-table">
        <caption className="sr-only">Journeys that dropped off at {at}</caption>
        <thead>
          <tr>
            <th scope="col">Customer</th>
            <th scope="col">Campaign</th>
            <th scope="col">Entered</th>
            <th scope="col">Furthest step</th>
          </tr>
        </thead>
        <tbody>
          {customers.map((c) => (
            <tr key={`${c.campaign_id ?? ""}\u0000${c.customer_id}`}>
              <th scope="row">{c.customer_id}</th>
              <td>{c.campaign_id ?? "(no campaign)"}</td>
              <td>{formatDateTime(new Date(c.entered_at), tz)}</td>
              <td>{stepName(c.reached_step)}</td>
            </tr>
          ))}
          {loaded && customers.length === 0 && (
            <tr>
              <td colSpan={4}>Nobody dropped off at this step.</td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}
