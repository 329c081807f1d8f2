import { useState, type FormEvent, type ReactNode } from "react";
import { Button, Dialog, ErrorNote, fieldClass } from "./ui.js";

/** Problems found in a form before it is sent, one line each (`field: message`). */
export class FormIssues extends Error {
  constructor(readonly issues: string[]) {
    super(issues.join("; "));
  }
}

/** A zod error's issues as `path: message` lines. */
export function issuesOf(error: { issues: { path: PropertyKey[]; message: string }[] }): string[] {
  return error.issues.map((i) => `${i.path.map(String).join(".") || "body"}: ${i.message}`);
}

/**
 * `body` checked with a contract schema, the same one the server checks it with: the parsed value,
 * or a {@link FormIssues} thrown for a {@link FormDialog} to list.
 */
export function parseForm<T>(
  schema: {
    safeParse(
      value: unknown,
    ):
      | { success: true; data: T }
      | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
  },
  body: unknown,
): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new FormIssues(issuesOf(parsed.error));
  return parsed.data;
}

/** A list of form problems, or nothing when there are none. */
export function Issues({ issues }: { issues: string[] }) {
  if (issues.length === 0) return null;
  return (
    <ul
      role="alert"
      className="list-inside list-disc rounded-md bg-red-50 px-3 py-2 text-sm text-red-700 dark:bg-red-950/40 dark:text-red-300"
    >
      {issues.map((issue) => (
        <li key={issue}>{issue}</li>
      ))}
    </ul>
  );
}

/**
 * A dialog around one form: its fields, then the problems found before sending (a thrown
 * {@link FormIssues}) or the API's error (message and code), then Cancel and the submit button,
 * which reads `busyLabel` while `onSubmit` runs. The caller closes it from `onSubmit` on success.
 */
export function FormDialog({
  title,
  onClose,
  onSubmit,
  submitLabel,
  busyLabel,
  canSubmit = true,
  danger = false,
  wide = false,
  children,
}: {
  title: string;
  onClose: () => void;
  onSubmit: () => Promise<void> | void;
  submitLabel: string;
  busyLabel?: string;
  canSubmit?: boolean;
  danger?: boolean;
  wide?: boolean;
  children: ReactNode;
}) {
  const [issues, setIssues] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setIssues([]);
    setError(null);
    setBusy(true);
    try {
      await onSubmit();
    } catch (caught) {
      if (caught instanceof FormIssues) setIssues(caught.issues);
      else setError(caught);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog open onClose={onClose} title={title} wide={wide}>
      <form onSubmit={(event) => void submit(event)} className="space-y-4" aria-label={title}>
        {children}
        <Issues issues={issues} />
        <ErrorNote error={error} />
        <div className="flex justify-end gap-2 border-t border-zinc-200 pt-4 dark:border-zinc-800">
          <Button onClick={onClose}>Cancel</Button>
          <Button
            type="submit"
            variant={danger ? "danger" : "primary"}
            disabled={busy || !canSubmit}
          >
            {busy ? (busyLabel ?? `${submitLabel}…`) : submitLabel}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

/**
 * Confirmation of an action that destroys something: the button stays disabled until `expected`
 * (the thing's name) is typed exactly.
 */
export function TypedConfirmDialog({
  title,
  expected,
  inputLabel,
  confirmLabel,
  onClose,
  onConfirm,
  children,
}: {
  title: string;
  expected: string;
  inputLabel: string;
  confirmLabel: string;
  onClose: () => void;
  onConfirm: () => Promise<void> | void;
  children: ReactNode;
}) {
  const [typed, setTyped] = useState("");
  return (
    <FormDialog
      title={title}
      onClose={onClose}
      onSubmit={onConfirm}
      submitLabel={confirmLabel}
      canSubmit={typed === expected}
      danger
    >
      <div className="text-sm text-zinc-600 dark:text-zinc-300">{children}</div>
      <input
        aria-label={inputLabel}
        value={typed}
        onChange={(event) => setTyped(event.target.value)}
        placeholder={expected}
        autoComplete="off"
        autoFocus
        className={`${fieldClass} w-full font-mono`}
      />
    </FormDialog>
  );
}

/** A labelled field of a form: the label above its input, and a hint below it. */
export function Field({
  label,
  hint,
  children,
}: {
  label: string;
  hint?: ReactNode;
  children: ReactNode;
}) {
  return (
    <div className="space-y-1.5 text-sm">
      <label className="block space-y-1.5">
        <span className="block font-medium">{label}</span>
        {children}
      </label>
      {hint !== undefined && <p className="text-xs text-zinc-500 dark:text-zinc-400">{hint}</p>}
    </div>
  );
}
