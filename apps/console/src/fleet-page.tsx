import type { Shell, ShellStatus } from "@l1fe/shells";
import { useEffect, useMemo, useRef, useState } from "react";
import { CreateShellDialog } from "./create-dialog.js";
import { RegionCapacity } from "./region-capacity.js";
import { canCreate, type Session } from "./session.js";
import { ShellSheet } from "./shell-sheet.js";
import { usePoll, useNow } from "./use-poll.js";
import {
  Button,
  ErrorNote,
  ProvisioningProgress,
  StatusBadge,
  Tag,
  age,
  describeError,
  fieldClass,
} from "./ui.js";

/** How often the fleet is re-read: the table is live without a refresh button. */
const FLEET_POLL_MS = 2000;

type SortKey = "name" | "status" | "language" | "runtime" | "network" | "region" | "createdAt";

const COLUMNS: { key: SortKey; label: string }[] = [
  { key: "name", label: "Name" },
  { key: "status", label: "Status" },
  { key: "language", label: "Language" },
  { key: "runtime", label: "Runtime" },
  { key: "network", label: "Network" },
  { key: "region", label: "Region" },
  { key: "createdAt", label: "Age" },
];

interface Notice {
  id: number;
  text: string;
  tone: "info" | "ok" | "error";
}

const NOTICE_TONES: Record<Notice["tone"], string> = {
  info: "border-sky-200 bg-sky-50 text-sky-800 dark:border-sky-900 dark:bg-sky-950/40 dark:text-sky-200",
  ok: "border-emerald-200 bg-emerald-50 text-emerald-800 dark:border-emerald-900 dark:bg-emerald-950/40 dark:text-emerald-200",
  error:
    "border-red-200 bg-red-50 text-red-700 dark:border-red-900 dark:bg-red-950/40 dark:text-red-300",
};

const STATUSES: ShellStatus[] = ["provisioning", "running", "paused", "stopped", "error"];

/** Every shell of the tenant, live; click a row for its detail sheet. */
export function FleetPage({
  session,
  openShellId,
  onOpenShell,
}: {
  session: Session;
  openShellId: string | null;
  onOpenShell: (shellId: string | null) => void;
}) {
  const { client, principal } = session;
  const fleet = usePoll(
    async () => (await client.list({ limit: 200 }).page()).items,
    FLEET_POLL_MS,
  );
  const now = useNow(1000);
  const [filter, setFilter] = useState("");
  const [status, setStatus] = useState<ShellStatus | "">("");
  const [sort, setSort] = useState<{ key: SortKey; descending: boolean }>({
    key: "createdAt",
    descending: true,
  });
  const [creating, setCreating] = useState(false);
  const [notices, setNotices] = useState<Notice[]>([]);

  // A create answers once the shell runs, or at once as provisioning when its language's image is
  // being built; the polled table shows that build's progress.
  const track = (creation: Promise<Shell>, label: string) => {
    const id = Date.now() + Math.random();
    const startedAt = Date.now();
    setNotices((list) => [...list, { id, text: `Creating ${label}…`, tone: "info" }]);
    fleet.refresh();
    const settle = (text: string, tone: Notice["tone"]) =>
      setNotices((list) => list.map((n) => (n.id === id ? { id, text, tone } : n)));
    creation.then(
      (shell) => {
        const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
        if (shell.status === "provisioning")
          settle(`${shell.name} is provisioning: building its image (about a minute)`, "info");
        else
          settle(
            `${shell.name} is ${shell.status} (${seconds} s)`,
            shell.status === "error" ? "error" : "ok",
          );
        fleet.refresh();
        setTimeout(() => setNotices((list) => list.filter((n) => n.id !== id)), 6000);
      },
      (error: unknown) => settle(`Creating ${label} failed: ${describeError(error)}`, "error"),
    );
  };

  // Keyboard: `n` opens the create dialog, `/` focuses the filter (not while typing elsewhere).
  const filterRef = useRef<HTMLInputElement>(null);
  const mayCreate = canCreate(principal);
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement | null;
      if (target?.closest("input, textarea, select, dialog, [role=dialog]")) return;
      if (event.metaKey || event.ctrlKey || event.altKey) return;
      if (event.key === "n" && mayCreate && openShellId === null) {
        event.preventDefault();
        setCreating(true);
      } else if (event.key === "/") {
        event.preventDefault();
        filterRef.current?.focus();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [mayCreate, openShellId]);

  const rows = useMemo(() => {
    const needle = filter.trim().toLowerCase();
    const matches = (shell: Shell) =>
      (status === "" || shell.status === status) &&
      (needle === "" ||
        [shell.name, shell.id, shell.language, shell.runtime, shell.network, shell.region].some(
          (field) => field.toLowerCase().includes(needle),
        ));
    const sorted = (fleet.data ?? []).filter(matches).sort((a, b) => {
      const order = String(a[sort.key]).localeCompare(String(b[sort.key]));
      return sort.descending ? -order : order;
    });
    return sorted;
  }, [fleet.data, filter, status, sort]);

  const toggleSort = (key: SortKey) =>
    setSort((current) =>
      current.key === key
        ? { key, descending: !current.descending }
        : { key, descending: key === "createdAt" },
    );

  const total = fleet.data?.length ?? 0;
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-end justify-between gap-3">
        <div>
          <h1 className="text-xl font-semibold tracking-tight">Fleet</h1>
          <p className="text-sm text-zinc-500 dark:text-zinc-400">
            {fleet.data === undefined
              ? "Loading…"
              : `${total} shell${total === 1 ? "" : "s"} · live, every ${FLEET_POLL_MS / 1000} s`}
          </p>
        </div>
        <div className="flex flex-wrap items-center gap-2">
          <input
            ref={filterRef}
            aria-label="Filter shells"
            placeholder="Filter shells…   /"
            value={filter}
            onChange={(event) => setFilter(event.target.value)}
            className={`${fieldClass} w-64`}
          />
          <select
            aria-label="Status filter"
            value={status}
            onChange={(event) => setStatus(event.target.value as ShellStatus | "")}
            className={`${fieldClass} w-36`}
          >
            <option value="">All statuses</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
          {canCreate(principal) && (
            <Button variant="primary" aria-keyshortcuts="n" onClick={() => setCreating(true)}>
              + New shell
              <kbd
                aria-hidden="true"
                className="ml-1 rounded bg-white/20 px-1 font-mono text-[10px] dark:bg-zinc-900/10"
              >
                N
              </kbd>
            </Button>
          )}
        </div>
      </div>

      <RegionCapacity client={client} />
      {fleet.error !== null && <ErrorNote error={fleet.error} />}
      {notices.map((notice) => (
        <div
          key={notice.id}
          role="status"
          className={`flex items-center justify-between rounded-md border px-3 py-2 text-sm ${NOTICE_TONES[notice.tone]}`}
        >
          <span>{notice.text}</span>
          {notice.tone === "error" && (
            <button
              type="button"
              className="text-xs underline"
              onClick={() => setNotices((list) => list.filter((n) => n.id !== notice.id))}
            >
              Dismiss
            </button>
          )}
        </div>
      ))}

      <div className="overflow-hidden rounded-xl border border-zinc-200 bg-white shadow-xs dark:border-zinc-800 dark:bg-zinc-900">
        <table className="w-full text-left text-sm" aria-label="Shells">
          <thead className="border-b border-zinc-200 bg-zinc-50 text-xs tracking-wide text-zinc-500 uppercase dark:border-zinc-800 dark:bg-zinc-900/60 dark:text-zinc-400">
            <tr>
              {COLUMNS.map((column) => (
                <th
                  key={column.key}
                  className="px-4 py-2.5 font-medium"
                  aria-sort={
                    sort.key === column.key
                      ? sort.descending
                        ? "descending"
                        : "ascending"
                      : "none"
                  }
                >
                  <button
                    type="button"
                    onClick={() => toggleSort(column.key)}
                    className="inline-flex items-center gap-1 uppercase hover:text-zinc-900 dark:hover:text-zinc-100"
                  >
                    {column.label}
                    <span className="w-2 text-[10px]">
                      {sort.key === column.key ? (sort.descending ? "▼" : "▲") : ""}
                    </span>
                  </button>
                </th>
              ))}
            </tr>
          </thead>
          <tbody className="divide-y divide-zinc-100 dark:divide-zinc-800">
            {rows.map((shell) => (
              <tr
                key={shell.id}
                data-shell-name={shell.name}
                tabIndex={0}
                onClick={() => onOpenShell(shell.id)}
                onKeyDown={(event) => {
                  if (event.key === "Enter") onOpenShell(shell.id);
                }}
                className="cursor-pointer hover:bg-zinc-50 focus:bg-sky-50 focus:outline-none dark:hover:bg-zinc-800/50 dark:focus:bg-sky-950/30"
              >
                <td className="px-4 py-2.5">
                  <div className="font-medium">{shell.name}</div>
                  <div className="font-mono text-xs text-zinc-500">{shell.id}</div>
                </td>
                <td className="px-4 py-2.5">
                  <StatusBadge status={shell.status} />
                  {shell.status === "provisioning" && (
                    <ProvisioningProgress reason={shell.statusReason} />
                  )}
                </td>
                <td className="px-4 py-2.5">
                  <Tag>{shell.language}</Tag>
                </td>
                <td className="px-4 py-2.5">{shell.runtime}</td>
                <td className="px-4 py-2.5">{shell.network}</td>
                <td className="px-4 py-2.5">{shell.region}</td>
                <td className="px-4 py-2.5 text-zinc-500 tabular-nums" title={shell.createdAt}>
                  {age(shell.createdAt, now)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {fleet.data !== undefined && rows.length === 0 && (
          <div className="px-6 py-14 text-center">
            {total === 0 ? (
              <>
                <p className="font-medium">No shells yet</p>
                <p className="mt-1 text-sm text-zinc-500 dark:text-zinc-400">
                  {canCreate(session.principal)
                    ? "Create one: pick a language, an isolation class and a network mode."
                    : "Shells created in this org will appear here."}
                </p>
              </>
            ) : (
              <p className="text-sm text-zinc-500">No shell matches the filter.</p>
            )}
          </div>
        )}
        {fleet.data === undefined && fleet.error === null && (
          <div className="px-6 py-14 text-center text-sm text-zinc-500">Loading the fleet…</div>
        )}
      </div>

      <CreateShellDialog
        open={creating}
        session={session}
        onClose={() => setCreating(false)}
        onSubmitted={track}
      />
      {openShellId !== null && (
        <ShellSheet
          key={openShellId}
          session={session}
          shellId={openShellId}
          onClose={() => onOpenShell(null)}
          onChanged={() => fleet.refresh()}
          onOpenShell={onOpenShell}
        />
      )}
    </div>
  );
}
