import { Bar, BarChart, CartesianGrid, LabelList, Tooltip, XAxis, YAxis } from "recharts";
import { formatCount, formatPercent } from "../format";
import { Panel } from "./Panel";

interface Props {
  total: number;
  intents: { label: string; count: number; share: number }[]; // count descending
}

export function IntentsPanel({ total, intents }: Props) {
  const chart =
    intents.length === 0 ? (
      <p className="empty-panel">No intents detected in this range.</p>
    ) : (
      <BarChart
        responsive
        layout="vertical"
        data={intents}
        style={{ width: "100%", height: 40 + 34 * intents.length }}
        margin={{ top: 4, right: 64, bottom: 4, left: 4 }}
        title="Intent distribution"
      >
        <CartesianGrid horizontal={false} stroke="#e5e9f0" />
        <XAxis type="number" allowDecimals={false} tick={{ fontSize: 12 }} />
        <YAxis type="category" dataKey="label" width={120} tick={{ fontSize: 12 }} />
        <Tooltip
          formatter={(value, _name, item) => [
            `${formatCount(Number(value))} (${formatPercent(item.payload.share)})`,
            "Intents",
          ]}
        />
        <Bar dataKey="count" name="Intents" fill="#0f8a6a" radius={[0, 4, 4, 0]} isAnimationActive={false}>
          <LabelList
            dataKey="share"
            position="right"
            fontSize={12}
            formatter={(v: unknown) => formatPercent(Number(v))}
          />
        </Bar>
      </BarChart>
    );
  const table = (
    <div className="table-wrap">
      <table>
        <caption className="sr-only">Intent distribution</caption>
        <thead>
          <tr>
            <th scope="col">Intent</th>
            <th scope="col" className="num">
              Count
            </th>
            <th scope="col" className="num">
              Share
            </th>
          </tr>
        </thead>
        <tbody>
          {intents.map((i) => (
            <tr key={i.label}>
              <th scope="row">{i.label}</th>
              <td className="num" data-testid={`intent-${i.label}`}>
                {formatCount(i.count)}
              </td>
              <td className="num">{formatPercent(i.share)}</td>
            </tr>
          ))}
          {intents.length === 0 && (
            <tr>
              <td colSpan={3}>No intents detected in this range.</td>
            </tr>
          )}
        </tbody>
        <tfoot>
          <tr>
            <th scope="row">Total</th>
            <td className="num">{formatCount(total)}</td>
            <td className="num">{total > 0 ? "100.0%" : ""}</td>
          </tr>
        </tfoot>
      </table>
    </div>
  );
  return (
    <Panel
      title="Intent distribution"
      name="intents"
      note={`${formatCount(total)} intents detected; bars show each label's share.`}
      chart={chart}
      table={table}
    />
  );
}
