import type { ApiError } from "../api";

// The API's own message is shown as is; code and status help when reporting a bug.
export function ErrorBox({ errors }: { errors: ApiError[] }) {
  if (errors.length === 0) return null;
  return (
    <div className="error" role="alert" data-testid="error">
      {errors.map((e) => (
        <p key={e.message}>
          <strong>Error:</strong> {e.message}{" "}
          <span className="muted">
            ({e.code}
            {e.status ? `, HTTP ${e.status}` : ""})
          </span>
        </p>
      ))}
    </div>
  );
}
