import { type FormEvent, useEffect, useState } from "react";
import type { Campaigns } from "../api";
import {
  defaultInterval,
  fromLocalInput,
  type Interval,
  type Preset,
  PRESETS,
  type Range,
  toLocalInput,
  type ViewState,
  wallInput,
} from "../state";
import { zoneNames } from "../zones";

interface Props {
  view: ViewState;
  range: Range; // the range the view resolves to now (prefills the custom inputs)
  tenants: string[] | null; // null: not an admin key, no tenant picker
  campaigns: Campaigns | null;
  onChange: (next: ViewState) => void;
}

export function Controls({ view, range, tenants, campaigns, onChange }: Props) {
  // The campaign in the URL stays selectable even when it has no events in this range.
  const ids = new Map<string, number | null>(
    (campaigns?.campaigns ?? []).map((c) => [c.campaign_id, c.conversations]),
  );
  if (view.campaign && !ids.has(view.campaign)) ids.set(view.campaign, null);
  const campaignIds = [...ids.keys()].sort();
  const tenantIds =
    tenants && view.tenant && !tenants.includes(view.tenant) ? [...tenants, view.tenant] : tenants;

  const setPreset = (preset: Preset) => {
    if (preset === "custom") {
      const from = toLocalInput(range.from, view.tz);
      onChange({ ...view, preset, from, to: toLocalInput(range.to, view.tz) });
    } else {
      onChange({ ...view, preset, from: null, to: null, interval: defaultInterval(preset) });
    }
  };

  return (
    <div className="controls" role="group" aria-label="View">
      {tenantIds && (
        <div className="field">
          <label htmlFor="tenant-picker">Tenant</label>
          <select
            id="tenant-picker"
            data-testid="tenant-picker"
            value={view.tenant ?? ""}
            onChange={(e) => onChange({ ...view, tenant: e.target.value || null, campaign: null })}
          >
            {!view.tenant && <option value="">Choose a tenant</option>}
            {tenantIds.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </div>
      )}
      <div className="field">
        <label htmlFor="campaign-picker">Campaign</label>
        <select
          id="campaign-picker"
          data-testid="campaign-picker"
          value={view.campaign ?? ""}
          onChange={(e) => onChange({ ...view, campaign: e.target.value || null })}
        >
          <option value="">All campaigns</option>
          {campaignIds.map((id) => (
            <option key={id} value={id}>
              {id}
              {ids.get(id) != null && ` (${ids.get(id)} conversations)`}
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="range-preset">Date range</label>
        <select
          id="range-preset"
          data-testid="range-preset"
          value={view.preset}
          onChange={(e) => setPreset(e.target.value as Preset)}
        >
          {PRESETS.map((p) => (
            <option key={p.value} value={p.value}>
              {p.label}
            </option>
          ))}
        </select>
      </div>
      <fieldset className="field segmented">
        <legend>Interval</legend>
        {(["hour", "day"] as Interval[]).map((iv) => (
          <label key={iv}>
            <input
              type="radio"
              name="interval"
              value={iv}
              data-testid={`interval-${iv}`}
              checked={view.interval === iv}
              onChange={() => onChange({ ...view, interval: iv })}
            />
            <span>{iv === "hour" ? "Hourly" : "Daily"}</span>
          </label>
        ))}
      </fieldset>
      <ZonePicker view={view} onChange={onChange} />
      {view.preset === "custom" && <CustomRange view={view} onChange={onChange} />}
    </div>
  );
}

// The zone cuts the day and hour buckets and the heatmap, and says what the custom range
// means: its inputs keep the wall times they show ("Nov 1 00:00" stays Nov 1 00:00, now
// in the new zone).
function ZonePicker({ view, onChange }: Pick<Props, "view" | "onChange">) {
  const change = (tz: string) => {
    const custom =
      view.preset === "custom"
        ? { from: wallInput(view.from, view.tz), to: wallInput(view.to, view.tz) }
        : {};
    onChange({ ...view, tz, ...custom });
  };
  return (
    <div className="field">
      <label htmlFor="tz-picker">Time zone</label>
      <select id="tz-picker" data-testid="tz-picker" value={view.tz} onChange={(e) => change(e.target.value)}>
        {zoneNames(view.tz).map((z) => (
          <option key={z} value={z}>
            {z}
          </option>
        ))}
      </select>
    </div>
  );
}

// Custom from/to, wall times in the view's zone, applied with a button (or Enter) rather
// than on every keystroke.
function CustomRange({ view, onChange }: Pick<Props, "view" | "onChange">) {
  const [from, setFrom] = useState(wallInput(view.from, view.tz));
  const [to, setTo] = useState(wallInput(view.to, view.tz));
  const [problem, setProblem] = useState<string | null>(null);
  useEffect(() => {
    setFrom(wallInput(view.from, view.tz));
    setTo(wallInput(view.to, view.tz));
  }, [view.from, view.to, view.tz]);

  const apply = (e: FormEvent) => {
    e.preventDefault();
    const f = fromLocalInput(from, view.tz);
    const t = fromLocalInput(to, view.tz);
    if (!f || !t) return setProblem("Enter both dates and times.");
    if (f >= t) return setProblem("“From” must be before “To”.");
    setProblem(null);
    onChange({ ...view, from, to });
  };

  return (
    <form className="custom-range" onSubmit={apply} aria-label="Custom range">
      <div className="field">
        <label htmlFor="range-from">From ({view.tz})</label>
        <input
          id="range-from"
          data-testid="range-from"
          type="datetime-local"
          step={60}
          value={from}
          onChange={(e) => setFrom(e.target.value)}
        />
      </div>
      <div className="field">
        <label htmlFor="range-to">To ({view.tz}, excluded)</label>
        <input
          id="range-to"
          data-testid="range-to"
          type="datetime-local"
          step={60}
          value={to}
          onChange={(e) => setTo(e.target.value)}
        />
      </div>
      <button type="submit" data-testid="range-apply">
        Apply
      </button>
      <p className="form-problem" role="status">
        {problem}
      </p>
    </form>
  );
}
