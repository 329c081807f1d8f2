import { ShellsError, type PendingApproval } from "@l1fe/shells";
import { useEffect, useRef, type ButtonHTMLAttributes, type ReactNode } from "react";

type Variant = "primary" | "secondary" | "danger" | "ghost";

const VARIANTS: Record<Variant, string> = {
  primary:
    "bg-zinc-900 text-white hover:bg-zinc-700 dark:bg-zinc-100 dark:text-zinc-900 dark:hover:bg-white",
  secondary:
    "border border-zinc-300 bg-white text-zinc-800 hover:bg-zinc-100 dark:border-zinc-700 dark:bg-zinc-900 dark:text-zinc-100 dark:hover:bg-zinc-800",
  danger: "bg-red-600 text-white hover:bg-red-500",
  ghost: "text-zinc-600 hover:bg-zinc-100 dark:text-zinc-300 dark:hover:bg-zinc-800",
};

export function Button({
  variant = "secondary",
  className = "",
  ...props
}: ButtonHTMLAttributes<HTMLButtonElement> & { variant?: Variant }) {
  return (
    <button
      type="button"
      className={`inline-flex shrink-0 items-center justify-center gap-1.5 rounded-md px-3 py-1.5 text-sm font-medium whitespace-nowrap transition-colors focus-visible:ring-2 focus-visible:ring-sky-500 focus-visible:outline-none disabled:cursor-not-allowed disabled:opacity-40 ${VARIANTS[variant]} ${className}`}
      {...props}
    />
  );
}

const STATUS_STYLES: Record<string, string> = {
  running:
    "bg-emerald-50 text-emerald-700 ring-emerald-600/20 dark:bg-emerald-500/10 dark:text-emerald-400 dark:ring-emerald-400/20",
  provisioning:
    "bg-amber-50 text-amber-700 ring-amber-600/20 dark:bg-amber-500/10 dark:text-amber-300 dark:ring-amber-400/20",
  paused:
    "bg-sky-50 text-sky-700 ring-sky-600/20 dark:bg-sky-500/10 dark:text-sky-300 dark:ring-sky-400/20",
  stopped:
    "bg-zinc-100 text-zinc-600 ring-zinc-500/20 dark:bg-zinc-500/10 dark:text-zinc-400 dark:ring-zinc-400/20",
  error:
    "bg-red-50 text-red-700 ring-red-600/20 dark:bg-red-500/10 dark:text-red-400 dark:ring-red-400/20",
  deleted:
    "bg-zinc-100 text-zinc-400 line-through ring-zinc-500/10 dark:bg-zinc-800 dark:text-zinc-500",
  succeeded:
    "bg-emerald-50 text-emerald-700 ring-emerald-600/20 dark:bg-emerald-500/10 dark:text-emerald-400 dark:ring-emerald-400/20",
  failed:
    "bg-red-50 text-red-700 ring-red-600/20 dark:bg-red-500/10 dark:text-red-400 dark:ring-red-400/20",
  delivered:
    "bg-emerald-50 text-emerald-700 ring-emerald-600/20 dark:bg-emerald-500/10 dark:text-emerald-400 dark:ring-emerald-400/20",
  pending:
    "bg-amber-50 text-amber-700 ring-amber-600/20 dark:bg-amber-500/10 dark:text-amber-300 dark:ring-amber-400/20",
};

const DOT_STYLES: Record<string, string> = {
  running: "bg-emerald-500",
  provisioning: "bg-amber-500 animate-pulse",
  paused: "bg-sky-500",
  stopped: "bg-zinc-400",
  error: "bg-red-500",
  deleted: "bg-zinc-400",
  succeeded: "bg-emerald-500",
  failed: "bg-red-500",
  delivered: "bg-emerald-500",
  pending: "bg-amber-500",
};

export function StatusBadge({ status }: { status: string }) {
  return (
    <span
      data-testid="status-badge"
      data-status={status}
      className={`inline-flex items-center gap-1.5 rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset ${STATUS_STYLES[status] ?? STATUS_STYLES["stopped"]}`}
    >
      <span className={`size-1.5 rounded-full ${DOT_STYLES[status] ?? "bg-zinc-400"}`} />
      {status}
    </span>
  );
}

/**
 * A provisioning shell's progress (a first create of a language builds its image): a bar filled to
 * the percentage its status reason ends with (`… (45%)`), or a pulsing one when it names none, and
 * the step in words.
 */
export function ProvisioningProgress({ reason }: { reason: string | null }) {
  const percent = Number(/\((\d{1,3})%\)\s*$/.exec(reason ?? "")?.[1] ?? Number.NaN);
  const known = Number.isFinite(percent);
  return (
    <div className="mt-1 w-44" title={reason ?? undefined}>
      <div
        role="progressbar"
        aria-label="Provisioning"
        aria-valuemin={0}
        aria-valuemax={100}
        {...(known ? { "aria-valuenow": percent } : {})}
        className="h-1 overflow-hidden rounded-full bg-zinc-200 dark:bg-zinc-800"
      >
        <div
          className={`h-full rounded-full bg-amber-500 ${known ? "" : "w-1/3 animate-pulse"}`}
          style={known ? { width: `${Math.min(100, percent)}%` } : undefined}
        />
      </div>
      {reason && <div className="mt-0.5 truncate text-xs text-zinc-500">{reason}</div>}
    </div>
  );
}

export function Tag({ children }: { children: ReactNode }) {
  return (
    <span className="rounded bg-zinc-100 px-1.5 py-0.5 font-mono text-xs text-zinc-700 dark:bg-zinc-800 dark:text-zinc-300">
      {children}
    </span>
  );
}

/** A modal dialog on the native <dialog> element: focus trap, Escape and backdrop for free. */
export function Dialog({
  open,
  onClose,
  title,
  children,
  wide = false,
  label,
}: {
  open: boolean;
  onClose: () => void;
  title: string;
  children: ReactNode;
  wide?: boolean;
  label?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog
      ref={ref}
      aria-label={label ?? title}
      onClose={onClose}
      onClick={(event) => {
        if (event.target === ref.current) onClose();
      }}
      className={`m-auto w-full ${wide ? "max-w-3xl" : "max-w-lg"} rounded-xl border border-zinc-200 bg-white p-0 text-zinc-900 shadow-2xl backdrop:bg-zinc-950/50 backdrop:backdrop-blur-[2px] dark:border-zinc-800 dark:bg-zinc-900 dark:text-zinc-100`}
    >
      {open && (
        <div className="p-6">
          <div className="mb-5 flex items-start justify-between gap-4">
            <h2 className="text-lg font-semibold">{title}</h2>
            <button
              type="button"
              aria-label="Close"
              onClick={onClose}
              className="rounded p-1 text-zinc-500 hover:bg-zinc-100 dark:hover:bg-zinc-800"
            >
              ✕
            </button>
          </div>
          {children}
        </div>
      )}
    </dialog>
  );
}

/** An error as one readable line: the server's message and its stable code. */
export function describeError(error: unknown): string {
  if (error instanceof ShellsError) return `${error.message} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

export function ErrorNote({ error }: { error: unknown }) {
  if (error === null || error === undefined) return null;
  return (
    <p
      role="alert"
      className="rounded-md border border-red-200 bg-red-50 px-3 py-2 text-sm text-red-700 dark:border-red-900/60 dark:bg-red-950/40 dark:text-red-300"
    >
      {describeError(error)}
    </p>
  );
}

/**
 * A change the server holds for an approver (202), or nothing: the gated action, the approval's
 * id, the server's message and what happens once an approver grants it (`outcome`).
 */
export function PendingApprovalNote({
  pending,
  outcome,
}: {
  pending: PendingApproval | null;
  outcome: string;
}) {
  if (pending === null) return null;
  return (
    <div
      role="status"
      className="mt-2 rounded-lg border border-amber-300 bg-amber-50 px-4 py-3 text-sm text-amber-900 dark:border-amber-700/60 dark:bg-amber-950/40 dark:text-amber-200"
    >
      <p className="font-medium">
        Pending approval: {pending.approval.action} ({pending.approval.id})
      </p>
      <p>
        {pending.message} {outcome}
      </p>
    </div>
  );
}

/** A one-line confirmation of what just happened, or nothing. */
export function Notice({ text }: { text: string | null }) {
  if (text === null) return null;
  return (
    <p role="status" className="px-4 pb-2 text-sm text-emerald-600 dark:text-emerald-400">
      {text}
    </p>
  );
}

/** "12s", "5m", "3h", "2d": how long ago `iso` was, as of `now`. */
export function age(iso: string, now: number): string {
  const seconds = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export const fieldClass =
  "rounded-md border border-zinc-300 bg-white px-2.5 py-1.5 text-sm shadow-xs focus:border-sky-500 focus:ring-2 focus:ring-sky-500/30 focus:outline-none dark:border-zinc-700 dark:bg-zinc-950";

/** A form control with its visible name above it; `wide` lets it take the row's free space. */
export function Field({
  label,
  wide = false,
  children,
}: {
  label: string;
  wide?: boolean;
  children: ReactNode;
}) {
  return (
    <label className={`flex flex-col gap-1 text-sm ${wide ? "min-w-64 flex-1" : ""}`}>
      <span className="font-medium">{label}</span>
      {children}
    </label>
  );
}

export function Panel({ title, children }: { title: string; children: ReactNode }) {
  return (
    <section className="rounded-xl border border-zinc-200 bg-white shadow-xs dark:border-zinc-800 dark:bg-zinc-900">
      <h2 className="border-b border-zinc-200 px-4 py-3 text-sm font-semibold dark:border-zinc-800">
        {title}
      </h2>
      {children}
    </section>
  );
}

/** A plain table of rows; `undefined` rows read as loading, none as `empty`. */
export function Table({
  label,
  headers,
  rows,
  empty,
}: {
  label: string;
  headers: string[];
  rows: ReactNode[][] | undefined;
  empty: string;
}) {
  return (
    <table className="w-full text-left text-sm" aria-label={label}>
      <thead className="text-xs tracking-wide text-zinc-500 uppercase dark:text-zinc-400">
        <tr>
          {headers.map((header) => (
            <th key={header} className="px-4 py-2 font-medium">
              {header}
            </th>
          ))}
        </tr>
      </thead>
      <tbody className="divide-y divide-zinc-100 dark:divide-zinc-800">
        {rows?.map((cells, index) => (
          <tr key={index}>
            {cells.map((cell, column) => (
              <td key={column} className="px-4 py-2 align-top">
                {cell}
              </td>
            ))}
          </tr>
        ))}
        {rows !== undefined && rows.length === 0 && (
          <tr>
            <td colSpan={headers.length} className="px-4 py-8 text-center text-zinc-500">
              {empty}
            </td>
          </tr>
        )}
        {rows === undefined && (
          <tr>
            <td colSpan={headers.length} className="px-4 py-8 text-center text-zinc-500">
              Loading…
            </td>
          </tr>
        )}
      </tbody>
    </table>
  );
}

/** A timestamp in the viewer's locale, or a dash. */
export const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString() : "—");
