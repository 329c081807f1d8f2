import type { Approval, GateMode, NetworkMode, OrgPolicy, RuntimeClass } from "@l1fe/shells";
import { GatedAction } from "@shells/contract";
import { ApprovalSettings } from "./approval-settings.js";
import { useState } from "react";
import { CheckpointsPanel } from "./checkpoints-panel.js";
import { canControl, isAdmin, type Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, Panel, Table, Tag, fieldClass, when } from "./ui.js";

/** The org's activity history, newest first, live, under its signed checkpoints. */
export function ActivityPage({ session }: { session: Session }) {
  const activity = usePoll(
    async () => (await session.client.activity({ limit: 100 }).page()).items,
    3000,
  );
  return (
    <div className="space-y-6">
      <CheckpointsPanel session={session} />
      <Panel title="Activity">
        <ErrorNote error={activity.error} />
        <Table
          label="Activity"
          headers={["#", "Time", "Actor", "Action", "Target", "Outcome"]}
          empty="No activity yet."
          rows={activity.data?.map((event) => [
            <span className="text-zinc-500 tabular-nums">{event.seq}</span>,
            when(event.time),
            <Tag>{`${event.actor.type}:${event.actor.id}`}</Tag>,
            <span className="font-mono text-xs">{event.action}</span>,
            event.target ? <span className="font-mono text-xs">{event.target.id}</span> : "—",
            <span
              className={
                event.outcome === "success"
                  ? "text-emerald-600 dark:text-emerald-400"
                  : "text-red-600 dark:text-red-400"
              }
            >
              {event.outcome}
            </span>,
          ])}
        />
      </Panel>
    </div>
  );
}

/** Approvals of gated destructive actions; grant and deny for those who may decide. */
export function ApprovalsPage({ session }: { session: Session }) {
  const approvals = usePoll(() => session.client.approvals.list(), 3000);
  const [error, setError] = useState<unknown>(null);
  const decide = async (id: string, grant: boolean) => {
    setError(null);
    const reason = window.prompt(grant ? "Why grant this action?" : "Why deny it?");
    if (!reason) return;
    try {
      if (grant) await session.client.approvals.grant(id, { reason });
      else await session.client.approvals.deny(id, { reason });
      approvals.refresh();
    } catch (caught) {
      setError(caught);
    }
  };
  const withdraw = async (id: string) => {
    setError(null);
    try {
      await session.client.approvals.withdraw(id);
      approvals.refresh();
    } catch (caught) {
      setError(caught);
    }
  };
  const control = canControl(session.principal);
  const { actor } = session.principal;
  return (
    <Panel title="Approvals">
      <ErrorNote error={approvals.error ?? error} />
      <Table
        label="Approvals"
        headers={["Action", "Target", "Context", "Requested by", "State", "Created", ""]}
        empty="No approvals. Gate destructive actions by approvers in the org policy."
        rows={approvals.data?.map((approval) => [
          <span className="font-mono text-xs">{approval.action}</span>,
          <span className="font-mono text-xs">{approval.shellId}</span>,
          <ApprovalContextCell approval={approval} />,
          <Tag>{`${approval.requestedBy.type}:${approval.requestedBy.id}`}</Tag>,
          approval.state,
          when(approval.createdAt),
          control && approval.state === "pending" ? (
            approval.requestedBy.type === actor.type && approval.requestedBy.id === actor.id ? (
              <Button
                variant="ghost"
                aria-label={`Withdraw ${approval.id}`}
                onClick={() => void withdraw(approval.id)}
              >
                Withdraw
              </Button>
            ) : (
              <div className="flex gap-2">
                <Button onClick={() => void decide(approval.id, true)}>Grant</Button>
                <Button variant="ghost" onClick={() => void decide(approval.id, false)}>
                  Deny
                </Button>
              </div>
            )
          ) : null,
        ])}
      />
    </Panel>
  );
}

/**
 * The org policy; admins can change the isolation floor, the default network and the approval
 * settings: which actions need approval (and how), who approves, and how long a request waits.
 */
export function PolicyPage({ session }: { session: Session }) {
  const policy = usePoll(() => session.client.policy.get(), 10_000);
  const editable = isAdmin(session.principal) && canControl(session.principal);
  const members = usePoll(() => session.client.members.list(), 30_000);
  const [draft, setDraft] = useState<OrgPolicy | null>(null);
  const [saveError, setSaveError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const current = draft ?? policy.data;
  const save = async () => {
    if (!draft) return;
    setSaveError(null);
    try {
      await session.client.policy.update({
        isolationFloor: draft.isolationFloor,
        defaultNetwork: draft.defaultNetwork,
        approvalGates: draft.approvalGates,
        approvers: draft.approvers,
        approvalTtlSeconds: draft.approvalTtlSeconds,
      });
      setDraft(null);
      setSaved(true);
      policy.refresh();
    } catch (error) {
      setSaveError(error);
    }
  };
  const edit = (change: Partial<OrgPolicy>) => {
    if (current) setDraft({ ...current, ...change });
    setSaved(false);
  };
  const select = <T extends string>(
    label: string,
    value: T,
    options: readonly T[],
    onChange: (value: T) => void,
  ) => (
    <label className="grid grid-cols-[12rem_1fr] items-center gap-4 text-sm">
      <span className="text-zinc-600 dark:text-zinc-300">{label}</span>
      {editable ? (
        <select
          aria-label={label}
          value={value}
          onChange={(event) => onChange(event.target.value as T)}
          className={`${fieldClass} max-w-56`}
        >
          {options.map((option) => (
            <option key={option}>{option}</option>
          ))}
        </select>
      ) : (
        <span className="font-mono">{value}</span>
      )}
    </label>
  );
  return (
    <Panel title="Org policy">
      <div className="space-y-3 p-4">
        <ErrorNote error={policy.error ?? saveError} />
        {current && (
          <>
            {select<RuntimeClass>(
              "Isolation floor",
              current.isolationFloor,
              ["wasm", "container", "microvm"],
              (isolationFloor) => edit({ isolationFloor }),
            )}
            {select<NetworkMode>(
              "Default network",
              current.defaultNetwork,
              ["sealed", "localhost", "internet"],
              (defaultNetwork) => edit({ defaultNetwork }),
            )}
            <p className="text-sm">
              <span className="inline-block w-48 text-zinc-600 dark:text-zinc-300">
                Term credential TTL
              </span>
              <span className="font-mono">{current.termCredentialTtlSeconds} s</span>
            </p>
            <p className="text-sm">
              <span className="inline-block w-48 text-zinc-600 dark:text-zinc-300">
                Allowed regions
              </span>
              <span className="font-mono">{current.allowedRegions.join(", ") || "any"}</span>
            </p>
            <h3 className="pt-2 text-sm font-semibold">Approval gates</h3>
            {GatedAction.options.map((action) =>
              select<GateMode>(
                action,
                current.approvalGates[action],
                ["none", "confirm", "approvers"],
                (mode) => edit({ approvalGates: { ...current.approvalGates, [action]: mode } }),
              ),
            )}
            <ApprovalSettings
              policy={current}
              members={members.data ?? []}
              editable={editable}
              onChange={edit}
            />
            {editable && (
              <div className="flex items-center gap-3 pt-2">
                <Button variant="primary" disabled={!draft} onClick={() => void save()}>
                  Save policy
                </Button>
                {saved && <span className="text-sm text-emerald-600">Saved.</span>}
              </div>
            )}
          </>
        )}
      </div>
    </Panel>
  );
}

/** What an approver is shown of a request: what it asks, why it waits, and what it widens. */
function ApprovalContextCell({ approval }: { approval: Approval }) {
  const context = approval.context;
  if (!context) return <span className="text-zinc-500">—</span>;
  return (
    <div className="space-y-0.5 text-xs" data-testid="approval-context">
      {context.summary && <p>{context.summary}</p>}
      {context.template && <p className="font-mono">{context.template}</p>}
      {context.bindings && <p>bindings: {context.bindings.join(", ")}</p>}
      {context.diff && context.diff.widens.length > 0 && (
        <p className="font-mono text-amber-700 dark:text-amber-300">
          {context.diff.widens.join("; ")}
        </p>
      )}
      {context.policy && <p className="text-zinc-500">{context.policy}</p>}
    </div>
  );
}
