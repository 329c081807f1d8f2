import {
  isPendingApproval,
  type ActionResult,
  type ActivityEvent,
  type Capability,
  type PauseInfo,
  type PendingApproval,
  type Shell,
  type ShellForkResult,
  type ShellStatus,
} from "@l1fe/shells";
import { CAPABILITY_LEGAL_IN } from "@shells/contract";
import type { Terminal } from "@xterm/xterm";
import { useCallback, useEffect, useRef, useState } from "react";
import { CredentialsDialog } from "./credentials-dialog.js";
import { TypedConfirmDialog } from "./form-dialog.js";
import { canControl, canCreate, type Session } from "./session.js";
import { ShellBindingsSection } from "./shell-bindings.js";
import { ShellEgressSection } from "./shell-egress.js";
import { ForkDialog, ForkOutcome } from "./shell-fork.js";
import { ShellPortsSection } from "./shell-ports.js";
import { inertText } from "./terminal-text.js";
import { TerminalView } from "./terminal-view.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, ProvisioningProgress, StatusBadge, describeError } from "./ui.js";

/** Actions that destroy something: typed confirmation of the shell's name, or an approver. */
type ConfirmedAction = "stop" | "wipe_state" | "reinstall_os" | "delete";

const LIFECYCLE: Capability[] = ["restart", "snapshot", "restore", "logs"];

/** States a shell can be forked from (its filesystem is captured frozen). */
const FORKABLE: readonly ShellStatus[] = ["running", "paused", "stopped"];

const DANGER: { action: ConfirmedAction; title: string; detail: string }[] = [
  {
    action: "stop",
    title: "Stop",
    detail: "End the session. Processes are killed; state is kept.",
  },
  {
    action: "wipe_state",
    title: "Wipe state",
    detail: "Destroy the filesystem state entirely. The sandbox stays.",
  },
  { action: "delete", title: "Delete", detail: "End the shell and reclaim everything it holds." },
];

const ansi = {
  dim: "\x1b[2m",
  green: "\x1b[32m",
  red: "\x1b[31m",
  yellow: "\x1b[33m",
  cyan: "\x1b[36m",
  bold: "\x1b[1m",
  reset: "\x1b[0m",
};

function clock(iso: string): string {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

/**
 * One activity event as a line of the activity terminal. Everything but the console's own styling
 * is untrusted (details carry command strings and sandbox output) and goes through `inertText`.
 */
function eventLine(event: ActivityEvent): string {
  const color =
    event.outcome === "success" ? ansi.green : event.outcome === "denied" ? ansi.yellow : ansi.red;
  const details = Object.entries(event.details)
    .filter(([, value]) => value !== null && typeof value !== "object")
    .slice(0, 4)
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(" ");
  return `${ansi.dim}${clock(event.time)}${ansi.reset} ${color}${inertText(event.outcome.padEnd(7))}${ansi.reset} ${ansi.bold}${inertText(event.action)}${ansi.reset} ${ansi.dim}by ${inertText(`${event.actor.type}:${event.actor.id}`)}${details ? ` · ${inertText(details)}` : ""}${ansi.reset}`;
}

/**
 * The detail sheet of one shell: metadata and resources, lifecycle buttons, the always-dark
 * activity terminal (the shell's activity events, polled, plus pulled logs), and a danger zone.
 */
export function ShellSheet({
  session,
  shellId,
  onClose,
  onChanged,
  onOpenShell,
}: {
  session: Session;
  shellId: string;
  onClose: () => void;
  onChanged: () => void;
  onOpenShell: (shellId: string) => void;
}) {
  const { client, principal } = session;
  const control = canControl(principal);
  const shellPoll = usePoll(() => client.get(shellId), 2000, shellId);
  const shell = shellPoll.data;
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [pending, setPending] = useState<PendingApproval | null>(null);
  const [confirming, setConfirming] = useState<ConfirmedAction | null>(null);
  const [credentialsOpen, setCredentialsOpen] = useState(false);
  const [forking, setForking] = useState(false);
  const [forked, setForked] = useState<ShellForkResult | null>(null);
  const [pauseInfo, setPauseInfo] = useState<PauseInfo | null>(null);

  // The activity terminal: lines written before xterm is ready wait in `backlog`.
  const terminalRef = useRef<Terminal | null>(null);
  const backlog = useRef<string[]>([]);
  const write = useCallback((line: string) => {
    if (terminalRef.current) terminalRef.current.writeln(line);
    else backlog.current.push(line);
  }, []);
  const onTerminalReady = useCallback(
    (terminal: Terminal) => {
      terminalRef.current = terminal;
      terminal.writeln(`${ansi.dim}activity · ${inertText(shellId)}${ansi.reset}`);
      for (const line of backlog.current.splice(0)) terminal.writeln(line);
      return () => {
        terminalRef.current = null;
      };
    },
    [shellId],
  );

  // Activity events of this shell, newest page polled, written once each in chain order.
  const lastSeq = useRef(0);
  const events = usePoll(
    async () => (await client.activity({ shell: shellId, limit: 50 }).page()).items,
    2000,
    shellId,
  );
  useEffect(() => {
    const fresh = (events.data ?? [])
      .filter((event) => event.seq > lastSeq.current)
      .sort((a, b) => a.seq - b.seq);
    for (const event of fresh) {
      write(eventLine(event));
      lastSeq.current = event.seq;
    }
  }, [events.data, write]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape" && confirming === null && !credentialsOpen && !forking) onClose();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose, confirming, credentialsOpen, forking]);

  const report = (capability: string, outcome: ActionResult | PendingApproval) => {
    if (isPendingApproval(outcome)) {
      setPending(outcome);
      write(`${ansi.yellow}⏸ ${capability}: ${inertText(outcome.message)}${ansi.reset}`);
      return;
    }
    write(`${ansi.cyan}→ ${capability}: ${inertText(outcome.message)}${ansi.reset}`);
    if (outcome.pause) setPauseInfo(outcome.pause);
    for (const entry of outcome.logs ?? []) {
      write(
        `${ansi.dim}${clock(entry.time)} [${inertText(entry.kind)}]${ansi.reset} ${inertText(entry.message)}`,
      );
    }
  };

  const run = async (capability: Capability | "delete", confirm?: string) => {
    setBusy(capability);
    setActionError(null);
    try {
      if (capability === "delete") {
        const outcome = await client.delete(shellId, { confirm });
        if (isPendingApproval(outcome)) report("delete", outcome);
        else write(`${ansi.cyan}→ delete: the shell is deleted${ansi.reset}`);
      } else {
        report(capability, await client.action(shellId, capability, confirm ? { confirm } : {}));
      }
      shellPoll.refresh();
      events.refresh();
      onChanged();
    } catch (error) {
      setActionError(error);
      write(`${ansi.red}✗ ${capability}: ${inertText(describeError(error))}${ansi.reset}`);
    } finally {
      setBusy(null);
    }
  };

  const legal = (capability: Capability) =>
    shell !== undefined && CAPABILITY_LEGAL_IN[capability].includes(shell.status);

  return (
    <div className="fixed inset-0 z-40 flex justify-end" role="presentation">
      <div className="absolute inset-0 bg-zinc-950/40 backdrop-blur-[1px]" onClick={onClose} />
      <aside
        role="dialog"
        aria-label="Shell details"
        className="relative flex h-full w-full max-w-3xl flex-col overflow-y-auto border-l border-zinc-200 bg-white shadow-2xl dark:border-zinc-800 dark:bg-zinc-900"
      >
        <header className="sticky top-0 z-10 flex items-start justify-between gap-4 border-b border-zinc-200 bg-white/95 px-6 py-4 backdrop-blur dark:border-zinc-800 dark:bg-zinc-900/95">
          <div className="min-w-0">
            <div className="flex items-center gap-3">
              <h2 className="truncate text-lg font-semibold">{shell?.name ?? shellId}</h2>
              {shell && <StatusBadge status={shell.status} />}
            </div>
            <p className="font-mono text-xs text-zinc-500">{shellId}</p>
            {shell?.status === "provisioning" && (
              <ProvisioningProgress reason={shell.statusReason} />
            )}
          </div>
          <div className="flex shrink-0 items-center gap-2">
            {control && (
              <Button
                onClick={() => setCredentialsOpen(true)}
                disabled={shell?.status !== "running"}
              >
                Terminal &amp; credentials
              </Button>
            )}
            <Button variant="ghost" aria-label="Close details" onClick={onClose}>
              ✕
            </Button>
          </div>
        </header>

        <div className="space-y-6 px-6 py-5">
          {shellPoll.error !== null && <ErrorNote error={shellPoll.error} />}
          {shell && <Metadata shell={shell} />}

          {control && (
            <section>
              <h3 className="mb-2 text-sm font-semibold">Lifecycle</h3>
              <div className="flex flex-wrap gap-2">
                {LIFECYCLE.map((capability) => (
                  <Button
                    key={capability}
                    disabled={busy !== null || !legal(capability)}
                    onClick={() => void run(capability)}
                    title={legal(capability) ? undefined : `Not possible while ${shell?.status}`}
                  >
                    {busy === capability ? `${capability}…` : capability}
                  </Button>
                ))}
                <Button
                  disabled={busy !== null || !legal("reinstall_os")}
                  onClick={() => setConfirming("reinstall_os")}
                >
                  reinstall_os
                </Button>
                {shell?.status === "stopped" && (
                  <Button disabled={busy !== null} onClick={() => void run("start")}>
                    start
                  </Button>
                )}
                {shell?.status === "paused" ? (
                  <Button disabled={busy !== null} onClick={() => void run("resume")}>
                    {busy === "resume" ? "Resuming…" : "Resume"}
                  </Button>
                ) : (
                  <Button
                    disabled={busy !== null || !legal("pause")}
                    onClick={() => void run("pause")}
                    title={legal("pause") ? undefined : `Not possible while ${shell?.status}`}
                  >
                    {busy === "pause" ? "Pausing…" : "Pause"}
                  </Button>
                )}
                {canCreate(principal) && (
                  <Button
                    disabled={busy !== null || !shell || !FORKABLE.includes(shell.status)}
                    onClick={() => setForking(true)}
                  >
                    Fork…
                  </Button>
                )}
              </div>
              {shell?.status === "paused" && (
                <p className="mt-2 text-xs text-zinc-500 dark:text-zinc-400" role="status">
                  Every process is held where it was; execs are refused until Resume.
                  {pauseInfo &&
                    ` Held by ${pauseInfo.method === "freeze" ? "freezing" : "checkpointing"}, memory ${pauseInfo.memoryReleased ? "released" : "kept"}: ${pauseInfo.reason}`}
                </p>
              )}
            </section>
          )}

          {forked && (
            <ForkOutcome
              result={forked}
              onOpenShell={(id) => {
                setForked(null);
                onOpenShell(id);
              }}
            />
          )}

          {pending && (
            <div
              role="status"
              className="rounded-lg border border-amber-300 bg-amber-50 px-4 py-3 text-sm text-amber-900 dark:border-amber-700/60 dark:bg-amber-950/40 dark:text-amber-200"
            >
              <p className="font-medium">
                Waiting for approval: {pending.approval.action} ({pending.approval.id})
              </p>
              <p>{pending.message}</p>
            </div>
          )}
          {actionError !== null && <ErrorNote error={actionError} />}

          {shell?.network === "internet" && shell.status !== "deleted" && (
            <ShellEgressSection
              session={session}
              shell={shell}
              control={control}
              onChanged={() => {
                shellPoll.refresh();
                events.refresh();
              }}
            />
          )}

          {shell &&
            shell.status !== "deleted" &&
            (shell.network === "internet" || (shell.bindings?.length ?? 0) > 0) && (
              <ShellBindingsSection
                session={session}
                shell={shell}
                control={control}
                onChanged={() => {
                  shellPoll.refresh();
                  events.refresh();
                }}
              />
            )}

          {shell && shell.network !== "sealed" && shell.status !== "deleted" && (
            <ShellPortsSection session={session} shell={shell} control={control} />
          )}

          <section>
            <h3 className="mb-2 text-sm font-semibold">Activity</h3>
            <TerminalView label="activity-terminal" onReady={onTerminalReady} className="h-56" />
          </section>

          {control && shell && shell.status !== "deleted" && (
            <section className="rounded-xl border border-red-300 dark:border-red-900/70">
              <h3 className="border-b border-red-200 px-4 py-2.5 text-sm font-semibold text-red-700 dark:border-red-900/70 dark:text-red-400">
                Danger zone
              </h3>
              <ul className="divide-y divide-red-100 dark:divide-red-950">
                {DANGER.map(({ action, title, detail }) => {
                  const allowed = action === "delete" || legal(action);
                  return (
                    <li key={action} className="flex items-center justify-between gap-4 px-4 py-3">
                      <div>
                        <p className="text-sm font-medium">{title}</p>
                        <p className="text-xs text-zinc-500 dark:text-zinc-400">{detail}</p>
                      </div>
                      <Button
                        variant="danger"
                        disabled={busy !== null || !allowed}
                        onClick={() => setConfirming(action)}
                      >
                        {action}
                      </Button>
                    </li>
                  );
                })}
              </ul>
            </section>
          )}
        </div>
      </aside>

      {shell && confirming !== null && (
        <TypedConfirmDialog
          title={`Confirm ${confirming}`}
          expected={shell.name}
          inputLabel="Type the shell name to confirm"
          confirmLabel={confirming}
          onClose={() => setConfirming(null)}
          onConfirm={() => {
            setConfirming(null);
            void run(confirming, shell.name);
          }}
        >
          This runs <span className="font-mono font-semibold">{confirming}</span> on{" "}
          <span className="font-mono font-semibold">{shell.name}</span> and is recorded in the
          activity history. Type the shell&apos;s name to confirm.
        </TypedConfirmDialog>
      )}
      {shell && forking && (
        <ForkDialog
          session={session}
          shell={shell}
          onClose={() => setForking(false)}
          onForked={(result) => {
            setForking(false);
            setForked(result);
            events.refresh();
            onChanged();
          }}
        />
      )}
      {shell && credentialsOpen && (
        <CredentialsDialog
          session={session}
          shell={shell}
          onClose={() => setCredentialsOpen(false)}
        />
      )}
    </div>
  );
}

function Metadata({ shell }: { shell: Shell }) {
  const rows: [string, string][] = [
    ["Project", shell.project],
    ["Language", shell.language],
    ["Runtime", `${shell.isolation ?? shell.runtime} · ${shell.backend}`],
    ["Network", shell.network],
    ["Region", shell.region],
    ["Image", shell.imageVersion ?? "—"],
    ["Template", shell.template ?? "—"],
    ["Created", new Date(shell.createdAt).toLocaleString()],
    ["Expires", shell.expiresAt ? new Date(shell.expiresAt).toLocaleString() : "never"],
    ["Env", shell.envKeys.length ? shell.envKeys.join(", ") : "—"],
  ];
  if (shell.statusReason) rows.push(["Status reason", shell.statusReason]);
  const resources: [string, string][] = [
    ["CPU", `${shell.resources.cpu} ${shell.resources.cpu === 1 ? "core" : "cores"}`],
    ["Memory", `${shell.resources.memoryMb} MiB`],
    ["Processes", String(shell.resources.pids)],
    ["Disk", `${shell.resources.diskMb} MiB`],
  ];
  return (
    <div className="grid gap-6 sm:grid-cols-[2fr_1fr]">
      <dl className="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1.5 text-sm">
        {rows.map(([label, value]) => (
          <div key={label} className="contents">
            <dt className="text-zinc-500 dark:text-zinc-400">{label}</dt>
            <dd className="truncate font-mono text-xs leading-5">{value}</dd>
          </div>
        ))}
      </dl>
      <div>
        <h3 className="mb-2 text-sm font-semibold">Resources</h3>
        <dl className="grid grid-cols-2 gap-2">
          {resources.map(([label, value]) => (
            <div
              key={label}
              className="rounded-lg border border-zinc-200 px-3 py-2 dark:border-zinc-800"
            >
              <dt className="text-xs text-zinc-500 dark:text-zinc-400">{label}</dt>
              <dd className="text-sm font-medium tabular-nums">{value}</dd>
            </div>
          ))}
        </dl>
      </div>
    </div>
  );
}
