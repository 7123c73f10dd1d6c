import { Bar, BarChart, CartesianGrid, LabelList, Tooltip, XAxis, YAxis } from "recharts";
import type { FunnelStep, StepTime } from "../api";
import { formatCount, formatPercent, formatSpan, humanize, NONE } from "../format";
import type { ViewState } from "../state";
import { FunnelOptions } from "./FunnelOptions";
import { Panel } from "./Panel";

interface Props {
  steps: FunnelStep[];
  times: StepTime[] | null; // steps 2..n by label; null when time to convert did not answer
  view: ViewState;
  onChange: (next: ViewState) => void;
}

type Row = FunnelStep & { name: string; number: number; time: StepTime | null; dropped: number | null };

// Per step: journeys, conversion, time to convert (median and p90) and, from step 2 on, a
// button that opens the list of the journeys that dropped off there.
export function FunnelPanel({ steps, times, view, onChange }: Props) {
  const rows: Row[] = steps.map((s, i) => ({
    ...s,
    name: humanize(s.step),
    number: i + 1,
    time: i === 0 ? null : (times?.find((t) => t.step === s.step) ?? null),
    dropped: i === 0 ? null : (steps[i - 1]?.customers ?? 0) - s.customers,
  }));
  return (
    <Panel
      title="Journey funnel"
      name="funnel"
      note="Journeys that entered the funnel in this range, by the furthest step reached; times from the first step."
      controls={<FunnelOptions view={view} onChange={onChange} />}
      chart={<FunnelChart rows={rows} />}
      table={<FunnelTable rows={rows} />}
      footer={<FunnelSteps rows={rows} view={view} onChange={onChange} />}
    />
  );
}

function FunnelChart({ rows }: { rows: Row[] }) {
  return (
    <BarChart
      responsive
      layout="vertical"
      data={rows}
      style={{ width: "100%", height: 60 + 44 * rows.length }}
      margin={{ top: 4, right: 48, bottom: 4, left: 4 }}
      title="Journey funnel"
    >
      <CartesianGrid horizontal={false} stroke="#e5e9f0" />
      <XAxis type="number" allowDecimals={false} tick={{ fontSize: 12 }} />
      <YAxis type="category" dataKey="name" width={96} tick={{ fontSize: 13 }} />
      <Tooltip
        formatter={(value, _name, item) => [
          `${formatCount(Number(value))} (${formatPercent(item.payload.conversion_from_previous)} of previous step)`,
          "Customers",
        ]}
      />
      <Bar
        dataKey="customers"
        name="Customers"
        fill="#0f5fa8"
        radius={[0, 4, 4, 0]}
        isAnimationActive={false}
      >
        <LabelList dataKey="customers" position="right" fontSize={12} />
      </Bar>
    </BarChart>
  );
}

const span = (row: Row, pick: (t: StepTime) => number | null) =>
  row.time ? formatSpan(pick(row.time)) : NONE;

function FunnelTable({ rows }: { rows: Row[] }) {
  const heads = ["Customers", "From previous step", "From start", "Median time", "p90 time"];
  return (
    <div className="table-wrap">
      <table>
        <caption className="sr-only">Journey funnel</caption>
        <thead>
          <tr>
            <th scope="col">Step</th>
            {heads.map((h) => (
              <th key={h} scope="col" className="num">
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((s) => (
            <tr key={s.step}>
              <th scope="row">{s.name}</th>
              <td className="num">{formatCount(s.customers)}</td>
              <td className="num">{formatPercent(s.conversion_from_previous)}</td>
              <td className="num">{formatPercent(s.conversion_from_start)}</td>
              <td className="num">{span(s, (t) => t.median_s)}</td>
              <td className="num">{span(s, (t) => t.p90_s)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

// The step summary stays visible in both modes: it carries the per-step values.
function FunnelSteps({
  rows,
  view,
  onChange,
}: {
  rows: Row[];
  view: ViewState;
  onChange: (next: ViewState) => void;
}) {
  const toggle = (number: number) => onChange({ ...view, drop: view.drop === number ? null : number });
  return (
    <ol className="funnel-steps" aria-label="Funnel steps">
      {rows.map((s) => (
        <li key={s.step}>
          <span className="funnel-name">{s.name}</span>
          <strong data-testid={`funnel-step-${s.step}`}>{formatCount(s.customers)}</strong>
          <span className="muted">
            {s.number === 1 ? "entered" : `${formatPercent(s.conversion_from_previous)} of previous`}
          </span>
          {s.time && (
            <span className="funnel-time" data-testid={`ttc-${s.step}`}>
              median {span(s, (t) => t.median_s)} · p90 {span(s, (t) => t.p90_s)}
            </span>
          )}
          {s.dropped !== null && (
            <button
              type="button"
              className="link"
              data-testid={`dropoff-${s.number}`}
              aria-expanded={view.drop === s.number}
              aria-controls="dropoff-list"
              onClick={() => toggle(s.number)}
            >
              {formatCount(s.dropped)} dropped off
            </button>
          )}
        </li>
      ))}
    </ol>
  );
}
