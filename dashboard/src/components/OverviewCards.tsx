import type { Overview } from "../api";
import { formatCount, formatPercent, formatSeconds } from "../format";

// Values use the formats documented in format.ts: counts as plain integers, rates as
// percentages with one decimal, the average duration in seconds with one decimal.
export function OverviewCards({ overview }: { overview: Overview }) {
  const { conversations, engagement, intents } = overview;
  const cards = [
    {
      id: "conversations",
      label: "Conversations",
      value: formatCount(conversations.total),
      sub: "calls and chats",
    },
    { id: "calls", label: "Calls", value: formatCount(conversations.calls), sub: "voice conversations" },
    { id: "chats", label: "Chats", value: formatCount(conversations.chats), sub: "chat conversations" },
    {
      id: "avg-duration",
      label: "Average duration",
      value: formatSeconds(engagement.avg_duration_s),
      sub: `${formatSeconds(engagement.total_duration_s)} in total`,
    },
    {
      id: "engagement-rate",
      label: "Engagement rate",
      value: formatPercent(engagement.engagement_rate),
      sub: `${formatCount(engagement.engaged)} engaged`,
    },
    {
      id: "intent-rate",
      label: "Intent rate",
      value: formatPercent(intents.intent_rate),
      sub: `${formatCount(intents.total)} intents`,
    },
  ];
  return (
    <ul className="cards" aria-label="Overview">
      {cards.map((c) => (
        <li key={c.id} className="card">
          <span className="card-label">{c.label}</span>
          <span className="card-value" data-testid={`card-${c.id}`}>
            {c.value}
          </span>
          <span className="card-sub">{c.sub}</span>
        </li>
      ))}
    </ul>
  );
}
