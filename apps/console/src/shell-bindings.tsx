import { isPendingApproval, type PendingApproval, type Shell } from "@l1fe/shells";
import { useEffect, useState } from "react";
import type { Session } from "./session.js";
import { Button, ErrorNote, fieldClass, PendingApprovalNote } from "./ui.js";

/**
 * The service bindings a shell holds, with Detach for each and Attach for one of the org's
 * bindings (`POST …/bindings`): the shell's proxy applies the change at its next binding call. A
 * template marked `reviewBindings` parks an attach for an approver, shown as such.
 */
export function ShellBindingsSection({
  session,
  shell,
  control,
  onChanged,
}: {
  session: Session;
  shell: Shell;
  control: boolean;
  onChanged: () => void;
}) {
  const held = shell.bindings ?? [];
  const [names, setNames] = useState<string[]>([]);
  const [choice, setChoice] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [pending, setPending] = useState<PendingApproval | null>(null);
  const editable = control && shell.status !== "deleted" && shell.status !== "error";

  useEffect(() => {
    if (!editable) return;
    session.client.bindings.list().then(
      (items) => setNames(items.map((b) => b.name)),
      (caught: unknown) => setError(caught),
    );
  }, [editable, session]);

  const change = async (step: () => Promise<Shell | PendingApproval>) => {
    setBusy(true);
    setError(null);
    setPending(null);
    try {
      const answer = await step();
      if (isPendingApproval(answer)) setPending(answer);
      else {
        setChoice("");
        onChanged();
      }
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  };
  const attachable = names.filter((name) => !held.includes(name));

  return (
    <section aria-label="Service bindings">
      <h3 className="mb-1 text-sm font-semibold">Service bindings</h3>
      <p className="mb-2 text-xs text-zinc-500 dark:text-zinc-400">
        Each answers inside the shell at{" "}
        <span className="font-mono">http://127.0.0.1:3128/bindings/&lt;name&gt;</span>; the secret
        stays on the host. Attaching may need approval; detaching applies at once.
      </p>
      {held.length === 0 ? (
        <p className="text-sm text-zinc-500">None.</p>
      ) : (
        <ul className="space-y-1">
          {held.map((name) => (
            <li key={name} className="flex items-center gap-2 text-sm">
              <span className="font-mono">{name}</span>
              {editable && (
                <Button
                  variant="ghost"
                  disabled={busy}
                  aria-label={`Detach ${name}`}
                  onClick={() => void change(() => session.client.detachBinding(shell.id, name))}
                >
                  Detach
                </Button>
              )}
            </li>
          ))}
        </ul>
      )}
      {editable && attachable.length > 0 && (
        <div className="mt-2 flex items-center gap-2">
          <select
            aria-label="Binding to attach"
            value={choice}
            onChange={(event) => setChoice(event.target.value)}
            className={`${fieldClass} w-56`}
          >
            <option value="">Choose a binding…</option>
            {attachable.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
          <Button
            variant="primary"
            disabled={busy || choice === ""}
            onClick={() => void change(() => session.client.attachBinding(shell.id, choice))}
          >
            {busy ? "Attaching…" : "Attach"}
          </Button>
        </div>
      )}
      <PendingApprovalNote
        pending={pending}
        outcome="The binding is attached once an approver grants it."
      />
      <div className="mt-2">
        <ErrorNote error={error} />
      </div>
    </section>
  );
}
