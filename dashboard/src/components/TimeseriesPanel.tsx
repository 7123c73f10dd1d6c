import { CartesianGrid, Legend, Line, LineChart, Tooltip, XAxis, YAxis } from "recharts";
import { SERIES, type SeriesName, type SeriesRow } from "../dashboard";
import { formatBucket, formatCount, formatPointTime } from "../format";
import type { Interval } from "../state";
import { Panel } from "./Panel";

const LOOK: Record<SeriesName, { label: string; color: string; dash?: string }> = {
  conversations: { label: "Conversations", color: "#0f5fa8" },
  engaged: { label: "Engaged", color: "#0f8a6a", dash: "6 3" },
  intents: { label: "Intents", color: "#c2410c", dash: "2 3" },
};

interface Props {
  rows: SeriesRow[];
  interval: Interval;
  tz: string; // the zone the API cut the buckets in; each point's `t` carries its offset
}

export function TimeseriesPanel({ rows, interval, tz }: Props) {
  const manyDays = rows.length > 24;
  const chart = (
    <LineChart
      responsive
      data={rows}
      style={{ width: "100%", height: 280 }}
      margin={{ top: 8, right: 16, bottom: 4, left: 0 }}
      title="Conversations, engaged and intents over time"
    >
      <CartesianGrid stroke="#e5e9f0" />
      <XAxis
        dataKey="t"
        tickFormatter={(t: string) => formatBucket(t, interval, manyDays)}
        tick={{ fontSize: 12 }}
        minTickGap={manyDays && interval === "hour" ? 40 : 24}
      />
      <YAxis allowDecimals={false} tick={{ fontSize: 12 }} width={44} />
      <Tooltip
        labelFormatter={(t) =>
          `${interval === "hour" ? "Hour" : "Day"} from ${formatPointTime(String(t))} ${tz}`
        }
        formatter={(value) => formatCount(Number(value))}
      />
      <Legend />
      {SERIES.map((name) => (
        <Line
          key={name}
          type="monotone"
          dataKey={name}
          name={LOOK[name].label}
          stroke={LOOK[name].color}
          strokeDasharray={LOOK[name].dash}
          strokeWidth={2}
          dot={rows.length <= 40}
          isAnimationActive={false}
        />
      ))}
    </LineChart>
  );
  const table = (
    <div className="table-wrap table-scroll" tabIndex={0} role="region" aria-label="Time series table">
      <table>
        <caption className="sr-only">Conversations, engaged and intents per {interval}</caption>
        <thead>
          <tr>
            <th scope="col">
              {interval === "hour" ? "Hour" : "Day"} ({tz})
            </th>
            {SERIES.map((name) => (
              <th key={name} scope="col" className="num">
                {LOOK[name].label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.t}>
              <th scope="row">{formatPointTime(r.t)}</th>
              {SERIES.map((name) => (
                <td key={name} className="num">
                  {formatCount(r[name])}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
  return (
    <Panel
      wide
      title="Over time"
      name="timeseries"
      note={`Per ${interval} in ${tz}; engaged conversations are a subset of all conversations.`}
      chart={chart}
      table={table}
    />
  );
}
