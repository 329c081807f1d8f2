import {
  ConfirmationRequiredError,
  isPendingApproval,
  type PendingApproval,
  type Shell,
} from "@l1fe/shells";
import { useEffect, useState } from "react";
import { AllowlistEditor, egressOf } from "./allowlist-editor.js";
import type { Session } from "./session.js";
import { Button, ErrorNote, fieldClass, PendingApprovalNote } from "./ui.js";

/**
 * The egress allowlist of an `internet` shell, editable while it runs (`PATCH …/egress`).
 * Narrowing applies at once; widening passes the org's `egress_change` gate, so the answer may be
 * a request for the shell's name typed (`confirm`) or a pending approval, shown as such.
 */
export function ShellEgressSection({
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
  const saved = shell.egress?.allow ?? [];
  const savedKey = saved.join("\n");
  const [allow, setAllow] = useState<string[]>(saved);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [pending, setPending] = useState<PendingApproval | null>(null);
  const [needsConfirm, setNeedsConfirm] = useState(false);
  const [confirm, setConfirm] = useState("");
  const [applied, setApplied] = useState(false);
  // The shell's list as the server holds it replaces local edits whenever it changes.
  useEffect(() => setAllow(savedKey ? savedKey.split("\n") : []), [savedKey]);

  const dirty = allow.join("\n") !== savedKey;
  const editable = control && shell.status === "running";

  const save = async () => {
    setBusy(true);
    setError(null);
    setPending(null);
    setApplied(false);
    try {
      const answer = await session.client.changeEgress(shell.id, {
        egress: egressOf(allow),
        ...(needsConfirm ? { confirm } : {}),
      });
      if (isPendingApproval(answer)) {
        setPending(answer);
      } else {
        setApplied(true);
        setNeedsConfirm(false);
        setConfirm("");
        onChanged();
      }
    } catch (caught) {
      // Widening under a `confirm` gate: ask for the name, then send again.
      if (caught instanceof ConfirmationRequiredError) setNeedsConfirm(true);
      setError(caught);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-label="Egress allowlist">
      <h3 className="mb-1 text-sm font-semibold">Egress allowlist</h3>
      <p className="mb-2 text-xs text-zinc-500 dark:text-zinc-400">
        {saved.length === 0
          ? "No list of its own: the shell reaches whatever the org's egress policy allows."
          : "The shell reaches only these destinations (and only what the org's policy allows)."}{" "}
        Narrowing applies at once; widening may need approval.
      </p>
      <AllowlistEditor value={allow} onChange={setAllow} disabled={!editable} />
      {editable && (
        <div className="mt-2 flex items-center gap-2">
          {needsConfirm && (
            <input
              aria-label="Type the shell name to widen egress"
              value={confirm}
              onChange={(event) => setConfirm(event.target.value)}
              placeholder={shell.name}
              autoComplete="off"
              className={`${fieldClass} w-56`}
            />
          )}
          <Button
            variant="primary"
            disabled={busy || (!dirty && !needsConfirm)}
            onClick={() => void save()}
          >
            {busy ? "Saving…" : "Save allowlist"}
          </Button>
          {dirty && (
            <Button variant="ghost" disabled={busy} onClick={() => setAllow([...saved])}>
              Revert
            </Button>
          )}
          {applied && !dirty && (
            <span role="status" className="text-xs text-emerald-600 dark:text-emerald-400">
              Applied
            </span>
          )}
        </div>
      )}
      <PendingApprovalNote
        pending={pending}
        outcome="The shell keeps its current list until an approver grants the change."
      />
      <div className="mt-2">
        <ErrorNote error={error} />
      </div>
    </section>
  );
}
