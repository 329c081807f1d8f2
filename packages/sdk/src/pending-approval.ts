import type { ActionResult, Capability, GatedAction, PendingApproval } from "@shells/contract";

/**
 * The capabilities an org can put behind an approval gate (`stop`, `wipe_state`, `reinstall_os`);
 * the others always run at once.
 */
export type GatedCapability = Extract<Capability, GatedAction>;

/**
 * What `action(id, capability)` answers for `capability`: an `ActionResult`, or, for a gated
 * capability whose gate is `approvers`, a {@link PendingApproval} (HTTP 202) instead.
 */
export type ActionOutcome<C extends Capability> = C extends GatedCapability
  ? ActionResult | PendingApproval
  : ActionResult;

/**
 * True when an action or delete was not run but parked for a listed approver (HTTP 202): the answer
 * is a {@link PendingApproval} whose `approval.id` an approver grants or denies with
 * `shells.approvals.grant(id, { reason })`.
 *
 * ```ts
 * const outcome = await shells.action(shell.id, "wipe_state");
 * if (isPendingApproval(outcome)) console.log(`waiting for approval ${outcome.approval.id}`);
 * else console.log(outcome.shell.status);
 * ```
 */
export function isPendingApproval(value: unknown): value is PendingApproval {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { status?: unknown }).status === "pending_approval"
  );
}
