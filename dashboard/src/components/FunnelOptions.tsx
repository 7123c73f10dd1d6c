import { type FormEvent, useEffect, useState } from "react";
import { type Order, splitWindow, type ViewState, WINDOW_UNITS } from "../state";

// Order applies at once; the window (a number and a unit, empty for none) with Apply or Enter.
export function FunnelOptions({ view, onChange }: { view: ViewState; onChange: (next: ViewState) => void }) {
  const shown = splitWindow(view.window);
  const [amount, setAmount] = useState(shown.amount);
  const [unit, setUnit] = useState(shown.unit);
  useEffect(() => {
    const again = splitWindow(view.window);
    setAmount(again.amount);
    setUnit(again.unit);
  }, [view.window]);
  const [problem, setProblem] = useState<string | null>(null);
  const apply = (e: FormEvent) => {
    e.preventDefault();
    if (amount.trim() === "") {
      setProblem(null);
      return onChange({ ...view, window: null });
    }
    if (!/^\d{1,12}$/.test(amount.trim()) || Number(amount) < 1)
      return setProblem("The window is a whole number, 1 or more (empty: no window).");
    setProblem(null);
    onChange({
      ...view,
      window: Number(amount) * (WINDOW_UNITS.find((u) => u.value === unit)?.seconds ?? 1),
    });
  };
  return (
    <form className="funnel-options" onSubmit={apply} aria-label="Funnel options">
      <div className="field">
        <label htmlFor="funnel-order">Step order</label>
        <select
          id="funnel-order"
          data-testid="funnel-order"
          value={view.order}
          onChange={(e) => onChange({ ...view, order: e.target.value as Order })}
        >
          <option value="any">Any order</option>
          <option value="sequence">In sequence</option>
        </select>
      </div>
      <div className="field">
        <label htmlFor="funnel-window">Conversion window</label>
        <div className="inline">
          <input
            id="funnel-window"
            data-testid="funnel-window"
            type="number"
            min={1}
            step={1}
            inputMode="numeric"
            placeholder="none"
            value={amount}
            onChange={(e) => setAmount(e.target.value)}
          />
          <select
            aria-label="Window unit"
            data-testid="funnel-window-unit"
            value={unit}
            onChange={(e) => setUnit(e.target.value)}
          >
            {WINDOW_UNITS.map((u) => (
              <option key={u.value} value={u.value}>
                {u.label}
              </option>
            ))}
          </select>
        </div>
      </div>
      <button type="submit" data-testid="funnel-apply">
        Apply
      </button>
      <p className="form-problem" role="status">
        {problem}
      </p>
    </form>
  );
}
