import { type FormEvent, useEffect, useState } from "react";
import { Bar, BarChart, CartesianGrid, LabelList, Tooltip, XAxis, YAxis } from "recharts";
import type { Breakdown, GroupNumbers } from "../api";
import { formatCount, formatPercent, formatSeconds } from "../format";
import type { ViewState } from "../state";
import { Panel } from "./Panel";

const METADATA = "metadata.";
type Kind = "channel" | "campaign" | "metadata";

const kindOf = (by: string): Kind => (by === "channel" || by === "campaign" ? by : "metadata");

// A group's value as shown: a missing campaign or metadata value gets words, not a blank.
export function groupLabel(by: string, value: string | null): string {
  if (value !== null) return value;
  return by === "campaign" ? "(no campaign)" : by === "channel" ? "(no channel)" : "(not set)";
}

interface Props {
  breakdown: Breakdown;
  view: ViewState;
  onChange: (next: ViewState) => void;
}

function Row({ label, g, testid }: { label: string; g: GroupNumbers; testid?: string }) {
  return (
    <tr data-testid={testid}>
      <th scope="row">{label}</th>
      <td className="num">{formatCount(g.conversations)}</td>
      <td className="num">{formatCount(g.engaged)}</td>
      <td className="num">{formatPercent(g.engagement_rate)}</td>
      <td className="num">{formatSeconds(g.avg_duration_s)}</td>
    </tr>
  );
}

// Conversations and engagement by channel, campaign or a metadata key the user types: the
// API's top groups, and the rest summed as "Other".
export function BreakdownPanel({ breakdown, view, onChange }: Props) {
  const data = breakdown.groups.map((g) => ({ ...g, label: groupLabel(breakdown.by, g.value) }));
  const chart =
    data.length === 0 ? (
      <p className="empty-panel">No conversations in this range.</p>
    ) : (
      <BarChart
        responsive
        layout="vertical"
        data={data}
        style={{ width: "100%", height: 40 + 34 * data.length }}
        margin={{ top: 4, right: 56, bottom: 4, left: 4 }}
        title="Conversations by group"
      >
        <CartesianGrid horizontal={false} stroke="#e5e9f0" />
        <XAxis type="number" allowDecimals={false} tick={{ fontSize: 12 }} />
        <YAxis type="category" dataKey="label" width={110} tick={{ fontSize: 12 }} />
        <Tooltip
          formatter={(value, _name, item) => [
            `${formatCount(Number(value))} (${formatPercent(item.payload.engagement_rate)} engaged)`,
            "Conversations",
          ]}
        />
        <Bar
          dataKey="conversations"
          name="Conversations"
          fill="#6d4fc2"
          radius={[0, 4, 4, 0]}
          isAnimationActive={false}
        >
          <LabelList dataKey="conversations" position="right" fontSize={12} />
        </Bar>
      </BarChart>
    );
  const table = (
    <div className="table-wrap">
      <table>
        <caption className="sr-only">Conversations by {breakdown.by}</caption>
        <thead>
          <tr>
            <th scope="col">
              {kindOf(breakdown.by) === "metadata" ? breakdown.by.slice(METADATA.length) : breakdown.by}
            </th>
            <th scope="col" className="num">
              Conversations
            </th>
            <th scope="col" className="num">
              Engaged
            </th>
            <th scope="col" className="num">
              Rate
            </th>
            <th scope="col" className="num">
              Avg duration
            </th>
          </tr>
        </thead>
        <tbody>
          {data.map((g) => (
            <Row key={g.label} label={g.label} g={g} />
          ))}
          {data.length === 0 && (
            <tr>
              <td colSpan={5}>No conversations in this range.</td>
            </tr>
          )}
        </tbody>
        {breakdown.other && (
          <tfoot>
            <Row label="Other" g={breakdown.other} testid="breakdown-other" />
          </tfoot>
        )}
      </table>
    </div>
  );
  return (
    <Panel
      title="Breakdown"
      name="breakdown"
      note="Conversations per group in this range; the largest groups, then the rest as Other."
      controls={<BreakdownBy view={view} onChange={onChange} />}
      chart={chart}
      table={table}
    />
  );
}

// Channel and campaign apply at once; a metadata key applies with Apply or Enter.
function BreakdownBy({ view, onChange }: { view: ViewState; onChange: (next: ViewState) => void }) {
  const [kind, setKind] = useState<Kind>(kindOf(view.by));
  const [key, setKey] = useState(view.by.startsWith(METADATA) ? view.by.slice(METADATA.length) : "");
  useEffect(() => {
    setKind(kindOf(view.by));
    if (view.by.startsWith(METADATA)) setKey(view.by.slice(METADATA.length));
  }, [view.by]);
  const [problem, setProblem] = useState<string | null>(null);
  const choose = (next: Kind) => {
    setKind(next);
    setProblem(null);
    if (next !== "metadata") onChange({ ...view, by: next });
    else if (key.trim()) onChange({ ...view, by: METADATA + key.trim() });
  };
  const apply = (e: FormEvent) => {
    e.preventDefault();
    if (!key.trim()) return setProblem("Type a metadata key, such as agent.");
    setProblem(null);
    onChange({ ...view, by: METADATA + key.trim() });
  };
  return (
    <form className="breakdown-by" onSubmit={apply} aria-label="Breakdown">
      <div className="field">
        <label htmlFor="breakdown-by">Group by</label>
        <select
          id="breakdown-by"
          data-testid="breakdown-by"
          value={kind}
          onChange={(e) => choose(e.target.value as Kind)}
        >
          <option value="channel">Channel</option>
          <option value="campaign">Campaign</option>
          <option value="metadata">Metadata key</option>
        </select>
      </div>
      {kind === "metadata" && (
        <>
          <div className="field">
            <label htmlFor="breakdown-key">Metadata key</label>
            <input
              id="breakdown-key"
              data-testid="breakdown-key"
              type="text"
              spellCheck={false}
              autoComplete="off"
              placeholder="agent"
              value={key}
              onChange={(e) => setKey(e.target.value)}
            />
          </div>
          <button type="submit" data-testid="breakdown-apply">
            Apply
          </button>
        </>
      )}
      <p className="form-problem" role="status">
        {problem}
      </p>
    </form>
  );
}
