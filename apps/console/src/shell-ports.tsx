import type { PortUrl, Shell } from "@l1fe/shells";
import { PortExpose } from "@shells/contract";
import { useState, type FormEvent } from "react";
import { FormIssues, Issues, parseForm } from "./form-dialog.js";
import type { Session } from "./session.js";
import { usePoll, useNow } from "./use-poll.js";
import { Button, ErrorNote, Field, Table, fieldClass, when } from "./ui.js";

const TTL_CHOICES: { seconds: number; label: string }[] = [
  { seconds: 900, label: "15 minutes" },
  { seconds: 3600, label: "1 hour" },
  { seconds: 4 * 3600, label: "4 hours" },
  { seconds: 24 * 3600, label: "1 day" },
];

/**
 * Exposed ports of a `localhost` or `internet` shell: a URL through the control plane
 * (`/ports/<token>/`) that reaches a server listening on a port inside it. The list comes from the
 * API (`GET …/ports`: the URLs that still work, with port, maker and expiry, never the token); the
 * URL itself is answered once, when it is made, so this sheet shows the URLs it made until it
 * closes. Revoke ends a URL before it expires.
 */
export function ShellPortsSection({
  session,
  shell,
  control,
}: {
  session: Session;
  shell: Shell;
  control: boolean;
}) {
  const { client } = session;
  const now = useNow(1000);
  const [port, setPort] = useState("8000");
  const [ttlSeconds, setTtlSeconds] = useState(3600);
  const [made, setMade] = useState<PortUrl[]>([]);
  const [issues, setIssues] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [revoking, setRevoking] = useState<string | null>(null);
  const listed = usePoll(() => client.urls(shell.id), 5000, shell.id);

  const expose = async (event: FormEvent) => {
    event.preventDefault();
    setIssues([]);
    setError(null);
    setBusy(true);
    try {
      const body = parseForm(PortExpose, { port: Number(port), ttlSeconds });
      const url = await client.url(shell.id, body.port, { ttlSeconds });
      setMade((list) => [url, ...list]);
      listed.refresh();
    } catch (caught) {
      if (caught instanceof FormIssues) setIssues(caught.issues);
      else setError(caught);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (portUrlId: string) => {
    setError(null);
    setRevoking(portUrlId);
    try {
      await client.revokeUrl(shell.id, portUrlId);
      setMade((list) => list.filter((url) => url.id !== portUrlId));
      listed.refresh();
    } catch (caught) {
      setError(caught);
    } finally {
      setRevoking(null);
    }
  };

  const urlOf = (id: string) => made.find((url) => url.id === id);
  const running = shell.status === "running";
  return (
    <section aria-label="Exposed ports">
      <h3 className="mb-1 text-sm font-semibold">Exposed ports</h3>
      <p className="mb-2 text-xs text-zinc-500 dark:text-zinc-400">
        A URL reaches a server listening on that port inside the shell, over HTTP and WebSocket,
        until it expires or is revoked. Whoever holds it gets in: the URL is shown once, here, when
        it is made; the list below shows every URL that still works, without its token.
      </p>
      {control && (
        <form
          onSubmit={(event) => void expose(event)}
          className="mb-3 flex flex-wrap items-end gap-2"
          aria-label="Expose a port"
        >
          <Field label="Port">
            <input
              aria-label="Port"
              inputMode="numeric"
              value={port}
              onChange={(event) => setPort(event.target.value)}
              className={`${fieldClass} w-28 font-mono`}
            />
          </Field>
          <Field label="Works for">
            <select
              aria-label="Works for"
              value={ttlSeconds}
              onChange={(event) => setTtlSeconds(Number(event.target.value))}
              className={fieldClass}
            >
              {TTL_CHOICES.map((choice) => (
                <option key={choice.seconds} value={choice.seconds}>
                  {choice.label}
                </option>
              ))}
            </select>
          </Field>
          <Button
            type="submit"
            variant="primary"
            disabled={busy || !running}
            title={running ? undefined : `Not possible while ${shell.status}`}
          >
            {busy ? "Exposing…" : "Expose port"}
          </Button>
        </form>
      )}
      <Issues issues={issues} />
      <ErrorNote error={error ?? listed.error} />
      <div className="overflow-hidden rounded-lg border border-zinc-200 dark:border-zinc-800">
        <Table
          label="Exposed ports"
          headers={["Port", "URL", "Expires", "By", ""]}
          empty="No port URL works now."
          rows={listed.data?.map((exposed) => {
            const url = urlOf(exposed.id);
            const expired = Date.parse(exposed.expiresAt) <= now;
            return [
              <span className="font-mono text-xs">{exposed.port}</span>,
              url && !expired ? (
                <div className="flex items-center gap-2">
                  <a
                    href={url.url}
                    target="_blank"
                    rel="noreferrer noopener"
                    data-testid="port-url"
                    className="font-mono text-xs break-all text-sky-700 underline dark:text-sky-400"
                  >
                    {url.url}
                  </a>
                  <Button
                    variant="ghost"
                    aria-label={`Copy the URL of port ${exposed.port}`}
                    onClick={() => void navigator.clipboard?.writeText(url.url)}
                  >
                    Copy
                  </Button>
                </div>
              ) : (
                <span className="text-xs text-zinc-500">
                  {expired ? "expired" : "shown once, when it was made"}
                </span>
              ),
              <span className="text-xs">{when(exposed.expiresAt)}</span>,
              <span className="font-mono text-xs">
                {exposed.createdBy.type}:{exposed.createdBy.id}
              </span>,
              control ? (
                <Button
                  variant="ghost"
                  aria-label={`Revoke the URL of port ${exposed.port}`}
                  disabled={revoking !== null}
                  onClick={() => void revoke(exposed.id)}
                >
                  {revoking === exposed.id ? "Revoking…" : "Revoke"}
                </Button>
              ) : null,
            ];
          })}
        />
      </div>
    </section>
  );
}
