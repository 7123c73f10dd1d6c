import type { Overview, OverviewNumbers } from "../api";
import {
  countChange,
  formatCount,
  formatDateTime,
  formatPercent,
  formatSeconds,
  rateChange,
  secondsChange,
} from "../format";

type Kind = "count" | "seconds" | "rate";
const CHANGE: Record<Kind, (now: number, before: number) => string> = {
  count: countChange,
  seconds: secondsChange,
  rate: rateChange,
};

interface Card {
  id: string;
  label: string;
  kind: Kind;
  pick: (n: OverviewNumbers) => number;
  sub: (n: OverviewNumbers) => string;
}

const CARDS: Card[] = [
  {
    id: "conversations",
    label: "Conversations",
    kind: "count",
    pick: (n) => n.conversations.total,
    sub: () => "calls and chats",
  },
  {
    id: "calls",
    label: "Calls",
    kind: "count",
    pick: (n) => n.conversations.calls,
    sub: () => "voice conversations",
  },
  {
    id: "chats",
    label: "Chats",
    kind: "count",
    pick: (n) => n.conversations.chats,
    sub: () => "chat conversations",
  },
  {
    id: "avg-duration",
    label: "Average duration",
    kind: "seconds",
    pick: (n) => n.engagement.avg_duration_s,
    sub: (n) => `${formatSeconds(n.engagement.total_duration_s)} in total`,
  },
  {
    id: "engagement-rate",
    label: "Engagement rate",
    kind: "rate",
    pick: (n) => n.engagement.engagement_rate,
    sub: (n) => `${formatCount(n.engagement.engaged)} engaged`,
  },
  {
    id: "intent-rate",
    label: "Intent rate",
    kind: "rate",
    pick: (n) => n.intents.intent_rate,
    sub: (n) => `${formatCount(n.intents.total)} intents`,
  },
];

const SHOW: Record<Kind, (x: number) => string> = {
  count: formatCount,
  seconds: formatSeconds,
  rate: formatPercent,
};

// Values use the formats documented in format.ts; under each, the change against the
// previous period of the same length (counts as delta and percent, rates in percentage
// points, "n/a" when the previous value is 0).
export function OverviewCards({ overview, tz }: { overview: Overview; tz: string }) {
  const before = overview.previous;
  const period = before
    ? `${formatDateTime(new Date(before.from), tz)} to ${formatDateTime(new Date(before.to), tz)}`
    : "";
  return (
    <ul className="cards" aria-label="Overview">
      {CARDS.map((c) => (
        <li key={c.id} className="card">
          <span className="card-label">{c.label}</span>
          <span className="card-value" data-testid={`card-${c.id}`}>
            {SHOW[c.kind](c.pick(overview))}
          </span>
          <span className="card-sub">{c.sub(overview)}</span>
          {before && (
            <span className="card-change" title={`Previous period: ${period}`}>
              <span data-testid={`card-change-${c.id}`}>
                {CHANGE[c.kind](c.pick(overview), c.pick(before))}
              </span>{" "}
              <span className="muted">vs previous period</span>
            </span>
          )}
        </li>
      ))}
    </ul>
  );
}
