import { type FormEvent, useState } from "react";

interface Props {
  message: string | null; // why the API refused the key we had, if we had one
  onKey: (key: string) => void;
}

export function AuthPrompt({ message, onKey }: Props) {
  const [value, setValue] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (value.trim()) onKey(value.trim());
  };
  return (
    <section className="auth" data-testid="auth-required" aria-labelledby="auth-title">
      <h2 id="auth-title">API key required</h2>
      <p>
        {message ? `The API did not accept the key: ${message}` : "This dashboard needs a Pulse API key."}{" "}
        <code>pulse api</code> and <code>pulse up</code> print a dashboard link that carries one.
      </p>
      <form onSubmit={submit} className="auth-form">
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          required
          value={value}
          onChange={(e) => setValue(e.target.value)}
        />
        <button type="submit">Use this key</button>
      </form>
      <p className="muted">
        The key stays in this browser tab (session storage); it is never put in the address bar.
      </p>
    </section>
  );
}
