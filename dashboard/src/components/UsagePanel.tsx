import type { Usage } from "../api";
import { formatNumber } from "../format";

// Usage belongs to the tenant: the campaign filter does not apply (contract, section 3).
export function UsagePanel({ usage }: { usage: Usage }) {
  const rows = Object.entries(usage.usage).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return (
    <section className="panel" aria-labelledby="usage-title">
      <div className="panel-head">
        <h2 id="usage-title">Usage</h2>
      </div>
      <p className="muted panel-note">Whole tenant, in this range; the campaign filter does not apply.</p>
      {rows.length === 0 ? (
        <p className="empty-panel">No usage recorded in this range.</p>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Category</th>
                <th scope="col" className="num">
                  Total
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map(([category, total]) => (
                <tr key={category}>
                  <th scope="row">{category}</th>
                  <td className="num" data-testid={`usage-${category}`}>
                    {formatNumber(total)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
