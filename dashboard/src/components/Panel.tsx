import { type ReactNode, useId, useState } from "react";

interface Props {
  title: string;
  name: string; // for the toggle's data-testid: table-toggle-<name>
  note?: ReactNode;
  controls?: ReactNode; // under the title, above the chart or table
  chart: ReactNode;
  table?: ReactNode; // without one, no "Show as table" toggle
  footer?: ReactNode;
  wide?: boolean; // spans the whole grid row
}

const remembered = (name: string) => {
  try {
    return window.sessionStorage.getItem(`pulse.table.${name}`) === "1";
  } catch {
    return false;
  }
};

// A chart panel with a "Show as table" toggle when it has a table (every chart can be read
// as an HTML table). The choice is remembered for the tab, so it survives a change of view.
export function Panel({ title, name, note, controls, chart, table, footer, wide }: Props) {
  const [asTable, setAsTableState] = useState(() => remembered(name));
  const setAsTable = (value: boolean) => {
    setAsTableState(value);
    try {
      window.sessionStorage.setItem(`pulse.table.${name}`, value ? "1" : "0");
    } catch {
      // storage disabled: remembered for this view only
    }
  };
  const id = useId();
  return (
    <section className={wide ? "panel panel-wide" : "panel"} aria-labelledby={id} data-panel={name}>
      <div className="panel-head">
        <h2 id={id}>{title}</h2>
        {table && (
          <button
            type="button"
            className="toggle"
            aria-pressed={asTable}
            data-testid={`table-toggle-${name}`}
            onClick={() => setAsTable(!asTable)}
          >
            Show as table
          </button>
        )}
      </div>
      {note && <p className="muted panel-note">{note}</p>}
      {controls}
      {asTable && table ? table : chart}
      {footer}
    </section>
  );
}
