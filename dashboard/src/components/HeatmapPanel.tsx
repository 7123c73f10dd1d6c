import { useEffect, useState } from "react";
import type { HeatCell, Heatmap } from "../api";
import { formatCount, formatPercent } from "../format";
import type { HeatValue, ViewState } from "../state";
import { Panel } from "./Panel";

export const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const HOURS = Array.from({ length: 24 }, (_, h) => h);
const hourLabel = (h: number) => `${String(h).padStart(2, "0")}:00`;
// Below this width the grid turns: hours down, weekdays across, so 7 columns fit a phone.
const NARROW = "(max-width: 700px)";

function useNarrow(): boolean {
  const query = () => typeof window.matchMedia === "function" && window.matchMedia(NARROW).matches;
  const [narrow, setNarrow] = useState(query);
  useEffect(() => {
    if (typeof window.matchMedia !== "function") return;
    const list = window.matchMedia(NARROW);
    const onChange = () => setNarrow(list.matches);
    list.addEventListener("change", onChange);
    return () => list.removeEventListener("change", onChange);
  }, []);
  return narrow;
}

export function cellText(cell: HeatCell, value: HeatValue): string {
  return value === "conversations" ? formatCount(cell.conversations) : formatPercent(cell.engagement_rate);
}

function describe(cell: HeatCell): string {
  return (
    `${WEEKDAYS[cell.weekday]} ${hourLabel(cell.hour)}: ${formatCount(cell.conversations)} conversations, ` +
    `${formatCount(cell.engaged)} engaged (${formatPercent(cell.engagement_rate)})`
  );
}

interface Props {
  heatmap: Heatmap;
  view: ViewState;
  onChange: (next: ViewState) => void;
}

// Conversations (or the engagement rate) by weekday and hour of local time in the view's
// zone, as a table whose cells are shaded by conversations.
export function HeatmapPanel({ heatmap, view, onChange }: Props) {
  const narrow = useNarrow();
  const cells = new Map(heatmap.cells.map((c) => [c.weekday * 24 + c.hour, c]));
  const most = Math.max(1, ...heatmap.cells.map((c) => c.conversations));
  const cell = (weekday: number, hour: number) => {
    const c = cells.get(weekday * 24 + hour);
    if (!c) return <td key={`${weekday}-${hour}`} />;
    const shade = c.conversations / most;
    return (
      <td
        key={`${weekday}-${hour}`}
        className={shade > 0.55 ? "heat heat-dark" : "heat"}
        style={{ background: `rgba(15, 95, 168, ${(0.06 + 0.94 * shade).toFixed(3)})` }}
        title={describe(c)}
        data-testid={`heat-${weekday}-${hour}`}
      >
        {/* An empty hour is a pale, blank cell; its 0 is there for screen readers. */}
        {c.conversations === 0 ? (
          <span className="sr-only">{cellText(c, view.heat)}</span>
        ) : (
          cellText(c, view.heat)
        )}
      </td>
    );
  };
  const grid = narrow ? (
    <table className="heatmap heatmap-narrow">
      <caption className="sr-only">Conversations by hour (rows) and weekday (columns), {heatmap.tz}</caption>
      <thead>
        <tr>
          <th scope="col">Hour</th>
          {WEEKDAYS.map((d) => (
            <th key={d} scope="col" abbr={d}>
              {d.slice(0, 3)}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {HOURS.map((h) => (
          <tr key={h}>
            <th scope="row">{hourLabel(h)}</th>
            {WEEKDAYS.map((_, d) => cell(d, h))}
          </tr>
        ))}
      </tbody>
    </table>
  ) : (
    <table className="heatmap">
      <caption className="sr-only">Conversations by weekday (rows) and hour (columns), {heatmap.tz}</caption>
      <thead>
        <tr>
          <th scope="col">Day</th>
          {HOURS.map((h) => (
            <th key={h} scope="col" abbr={hourLabel(h)}>
              {String(h).padStart(2, "0")}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {WEEKDAYS.map((d, w) => (
          <tr key={d}>
            <th scope="row" abbr={d}>
              {d.slice(0, 3)}
            </th>
            {HOURS.map((h) => cell(w, h))}
          </tr>
        ))}
      </tbody>
    </table>
  );
  const controls = (
    <fieldset className="field segmented">
      <legend>Cells show</legend>
      {(["conversations", "engagement"] as HeatValue[]).map((v) => (
        <label key={v}>
          <input
            type="radio"
            name="heat"
            value={v}
            data-testid={`heat-show-${v}`}
            checked={view.heat === v}
            onChange={() => onChange({ ...view, heat: v })}
          />
          <span>{v === "conversations" ? "Conversations" : "Engagement rate"}</span>
        </label>
      ))}
    </fieldset>
  );
  return (
    <Panel
      wide
      title="Best hours"
      name="heatmap"
      note={`Conversations by weekday and hour in ${heatmap.tz}; darker cells had more conversations.`}
      controls={controls}
      chart={<div className="table-wrap">{grid}</div>}
    />
  );
}
