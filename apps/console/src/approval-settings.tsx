import type { Member, OrgPolicy } from "@l1fe/shells";
import { fieldClass } from "./ui.js";

/** Bounds of `approvalTtlSeconds` in the org policy (one minute to a week). */
const TTL_MIN_SECONDS = 60;
const TTL_MAX_SECONDS = 7 * 24 * 3600;

/**
 * Who decides approvals and how long a request waits for them. Admins tick the org's active users
 * who approve and set the wait; everyone else reads them.
 */
export function ApprovalSettings({
  policy,
  members,
  editable,
  onChange,
}: {
  policy: OrgPolicy;
  members: Member[];
  editable: boolean;
  onChange: (change: Partial<OrgPolicy>) => void;
}) {
  const emailOf = (id: string) => members.find((m) => m.id === id)?.email ?? id;
  const toggle = (id: string, on: boolean) =>
    onChange({
      approvers: on ? [...policy.approvers, id] : policy.approvers.filter((a) => a !== id),
    });
  return (
    <div className="space-y-3 pt-2" aria-label="Approval settings">
      <label className="grid grid-cols-[12rem_1fr] items-center gap-4 text-sm">
        <span className="text-zinc-600 dark:text-zinc-300">Approval waits (seconds)</span>
        {editable ? (
          <input
            type="number"
            aria-label="Approval TTL in seconds"
            min={TTL_MIN_SECONDS}
            max={TTL_MAX_SECONDS}
            value={policy.approvalTtlSeconds}
            onChange={(event) => onChange({ approvalTtlSeconds: Number(event.target.value) })}
            className={`${fieldClass} max-w-56`}
          />
        ) : (
          <span className="font-mono">{policy.approvalTtlSeconds} s</span>
        )}
      </label>
      <fieldset className="grid grid-cols-[12rem_1fr] gap-4 text-sm">
        <legend className="contents">
          <span className="text-zinc-600 dark:text-zinc-300">Approvers</span>
        </legend>
        {editable ? (
          <div className="flex flex-col gap-1">
            {members
              .filter((m) => m.disabledAt === null)
              .map((member) => (
                <label key={member.id} className="flex items-center gap-2">
                  <input
                    type="checkbox"
                    aria-label={`Approver ${member.email}`}
                    checked={policy.approvers.includes(member.id)}
                    onChange={(event) => toggle(member.id, event.target.checked)}
                  />
                  <span>{member.email}</span>
                  <span className="font-mono text-xs text-zinc-500">{member.role}</span>
                </label>
              ))}
          </div>
        ) : (
          <span className="font-mono" data-testid="approvers">
            {policy.approvers.map(emailOf).join(", ") || "none"}
          </span>
        )}
      </fieldset>
    </div>
  );
}
