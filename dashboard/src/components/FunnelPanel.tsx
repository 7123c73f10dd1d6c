import { Bar, BarChart, CartesianGrid, LabelList, Tooltip, XAxis, YAxis } from "recharts";
import type { FunnelStep } from "../api";
import { formatCount, formatPercent, humanize } from "../format";
import { Panel } from "./Panel";

export function FunnelPanel({ steps }: { steps: FunnelStep[] }) {
  const data = steps.map((s) => ({ ...s, name: humanize(s.step) }));
  const chart = (
    <BarChart
      responsive
      layout="vertical"
      data={data}
      style={{ width: "100%", height: 60 + 44 * data.length }}
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
  const table = (
    <div className="table-wrap">
      <table>
        <caption className="sr-only">Journey funnel</caption>
        <thead>
          <tr>
            <th scope="col">Step</th>
            <th scope="col" className="num">
              Customers
            </th>
            <th scope="col" className="num">
              From previous step
            </th>
            <th scope="col" className="num">
              From start
            </th>
          </tr>
        </thead>
        <tbody>
          {data.map((s) => (
            <tr key={s.step}>
              <th scope="row">{s.name}</th>
              <td className="num">{formatCount(s.customers)}</td>
              <td className="num">{formatPercent(s.conversion_from_previous)}</td>
              <td className="num">{formatPercent(s.conversion_from_start)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
  // The step summary stays visible in both modes: it carries the funnel-step-<step> values.
  const footer = (
    <ol className="funnel-steps" aria-label="Funnel steps">
      {data.map((s, i) => (
        <li key={s.step}>
          <span className="funnel-name">{s.name}</span>
          <strong data-testid={`funnel-step-${s.step}`}>{formatCount(s.customers)}</strong>
          <span className="muted">
            {i === 0 ? "entered" : `${formatPercent(s.conversion_from_previous)} of previous`}
          </span>
        </li>
      ))}
    </ol>
  );
  return (
    <Panel
      title="Journey funnel"
      name="funnel"
      note="Journeys that entered the funnel in this range, by the furthest step reached."
      chart={chart}
      table={table}
      footer={footer}
    />
  );
}
