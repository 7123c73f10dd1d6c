import { useEffect, useState } from "react";
import { REFRESH_MS } from "../dashboard";
import { describeAsOf, formatDateTime, formatTime } from "../format";
import type { Range } from "../state";

interface Props {
  asOf: string | null;
  sources: string[];
  range: Range;
  loadedAt: Date;
  tz: string;
  live: boolean;
  onToggle: () => void;
}

// Its own one-second clock, so "N s behind" stays true between refreshes (and while
// paused) without re-rendering the charts.
export function LiveStatus({ asOf, sources, range, loadedAt, tz, live, onToggle }: Props) {
  const [now, setNow] = useState(() => new Date());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(new Date()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  return (
    <div className="live">
      <div className="live-text">
        <p className="as-of" data-testid="as-of">
          {sources.length === 0 ? "no answer from the API yet" : describeAsOf(asOf, now, tz)}
        </p>
        <p className="muted">
          <span data-testid="range-shown">
            {formatDateTime(range.from, tz)} to {formatDateTime(range.to, tz)} {tz}
          </span>{" "}
          · source: {sources.join(" + ") || "none"} · updated {formatTime(loadedAt, tz)}
        </p>
      </div>
      <div className="live-actions">
        <span className={live ? "dot dot-live" : "dot"} aria-hidden="true" />
        <span className="muted">{live ? `Live, every ${REFRESH_MS / 1000} s` : "Paused"}</span>
        <button type="button" data-testid="refresh-toggle" onClick={onToggle}>
          {live ? "Pause live updates" : "Resume live updates"}
        </button>
      </div>
    </div>
  );
}
