import {
  GatedAction,
  type Actor,
  type Approval,
  type ApprovalAction,
  type ApprovalContext,
  type PendingApproval,
  type Scope,
} from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { AppError } from "../errors.js";
import { AGENT_ENTITLEMENT } from "../iam/authorize.js";
import { actorOf, keyLapse, resolveCaller, type Caller } from "../iam/principal.js";
import { separationOfDutiesConflict } from "../iam/separation-of-duties.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { ApprovalTable, Database } from "../store/schema.js";

/** True for the answer of an action parked at the gate. */
export function isPendingApproval(value: unknown): value is PendingApproval {
  return (
    typeof value === "object" &&
    value !== null &&
    "status" in value &&
    value.status === "pending_approval"
  );
}

/** True for the actions the org's policy gates; the others wait for review their template asks. */
const isGated = (action: ApprovalAction): action is GatedAction =>
  (GatedAction.options as readonly string[]).includes(action);

/** A destructive action that cleared the gate, and who approved it (when someone had to). */
export interface GateClearance {
  approvalId?: string;
  approvedBy?: string;
}

/**
 * Runs a granted action as its requester. The shell service provides it: the gate decides who may
 * act, the service knows how to act.
 */
export type GrantedActionPerformer = (
  requester: Caller,
  approval: Selectable<ApprovalTable>,
  clearance: GateClearance,
) => Promise<void>;

/** What an approval's history events are about: the run, the project or the shell it holds back. */
const targetOf = (row: { action: ApprovalAction; shell_id: string }) => ({
  type: row.action === "run" ? "run" : row.action === "project_egress_change" ? "project" : "shell",
  id: row.shell_id,
});

const toApproval = (row: Selectable<ApprovalTable>): Approval => ({
  id: row.id,
  shellId: row.shell_id,
  action: row.action,
  state: row.state,
  requestedBy: { type: row.requested_by_type, id: row.requested_by_id },
  decidedBy: row.decided_by,
  reason: row.reason,
  outcome: row.outcome,
  createdAt: row.created_at,
  expiresAt: row.expires_at,
  decidedAt: row.decided_at,
  context: row.context === null ? null : (JSON.parse(row.context) as ApprovalContext),
});

/**
 * Closes every pending approval held on a shell or run that is gone (a deleted shell, a run torn
 * down before review) as `withdrawn`, so no later grant acts on it, and records each close as
 * `approval.withdraw` by `actor`. Answers how many it closed.
 */
export async function closePendingApprovals(
  db: Kysely<Database>,
  activity: ActivityService,
  close: { orgId: string; targetId: string; actor: Actor; reason: string },
): Promise<number> {
  const pending = await db
    .selectFrom("approvals")
    .selectAll()
    .where("org_id", "=", close.orgId)
    .where("shell_id", "=", close.targetId)
    .where("state", "=", "pending")
    .execute();
  let closed = 0;
  for (const row of pending) {
    if (!(await markWithdrawn(db, row, close.actor.id, close.reason))) continue;
    closed += 1;
    await activity.record({
      orgId: close.orgId,
      actor: close.actor,
      action: "approval.withdraw",
      target: targetOf(row),
      outcome: "success",
      details: { approvalId: row.id, action: row.action, reason: close.reason },
    });
  }
  return closed;
}

/** Sets a still-pending approval `withdrawn`; false when it was decided or closed meanwhile. */
async function markWithdrawn(
  db: Kysely<Database>,
  row: Selectable<ApprovalTable>,
  by: string,
  reason: string,
): Promise<boolean> {
  const updated = await db
    .updateTable("approvals")
    .set({ state: "withdrawn", decided_by: by, reason, decided_at: nowIso() })
    .where("id", "=", row.id)
    .where("state", "=", "pending")
    .executeTakeFirst();
  return Number(updated.numUpdatedRows) > 0;
}

/**
 * The approval gate for destructive actions (every `GatedAction`: `stop`, `wipe_state`,
 * `reinstall_os`, `delete`, `restore`, `restart`). The
 * org's policy decides per action: no gate, typed confirmation (the request's `confirm` must equal
 * the shell's name or id), or named approvers (the request becomes a pending approval that a
 * listed approver, other than the requester, grants or denies before it expires).
 */
export class ApprovalGate {
  readonly #performers = new Map<ApprovalAction, GrantedActionPerformer>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly policies: PolicyService,
  ) {}

  /** Lets the action through, refuses it, or parks it as a pending approval. */
  async check(
    caller: Caller,
    shell: { id: string; name: string },
    action: GatedAction,
    confirm: string | undefined,
    request: Record<string, unknown>,
    context: ApprovalContext | null = null,
  ): Promise<{ clearance: GateClearance } | { pending: PendingApproval }> {
    const policy = await this.policies.get(caller.orgId);
    const mode = policy.approvalGates[action];
    if (mode === "none") return { clearance: {} };
    if (mode === "confirm") {
      if (confirm === shell.name || confirm === shell.id) return { clearance: {} };
      throw new AppError(
        "confirmation_required",
        confirm === undefined
          ? `${action} is gated by typed confirmation: send confirm equal to the shell's name (${shell.name}) or id.`
          : `The confirmation does not match: type the shell's name (${shell.name}) or id.`,
        { action, shell: shell.name },
      );
    }
    // The approver sees which policy asks for them, beside what the request carries.
    const policyText = `org policy: approvalGates.${action} is approvers`;
    return {
      pending: await this.park(caller, shell, action, request, {
        ...context,
        policy: context?.policy ?? policyText,
      }),
    };
  }

  /**
   * Parks an action as a pending approval for the org's listed approvers, whatever the gate's
   * mode: a `run` of a template marked `reviewBeforeRun` always waits for one, with `context`
   * saying what it runs and why it waits. `review_unavailable` when the org lists no approvers.
   */
  async park(
    caller: Caller,
    target: { id: string; name: string },
    action: ApprovalAction,
    request: Record<string, unknown>,
    context: ApprovalContext | null,
  ): Promise<PendingApproval> {
    const policy = await this.policies.get(caller.orgId);
    if (!isGated(action) && policy.approvers.length === 0)
      throw new AppError(
        "review_unavailable",
        `This ${action === "run" ? "run's" : "shell's"} template requires review (${context?.policy ?? action}), but the org lists no approvers.`,
        { template: context?.template },
      );
    const now = Date.now();
    const row: Selectable<ApprovalTable> = {
      id: newId("apr"),
      org_id: caller.orgId,
      shell_id: target.id,
      action,
      request: JSON.stringify(request),
      requested_by_type: caller.actor.type,
      requested_by_id: caller.actor.id,
      requested_key_id: caller.keyId,
      state: "pending",
      decided_by: null,
      reason: null,
      outcome: null,
      context: context ? JSON.stringify(context) : null,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + policy.approvalTtlSeconds * 1000).toISOString(),
      decided_at: null,
    };
    await this.db.insertInto("approvals").values(row).execute();
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "approval.request",
      target: targetOf({ action, shell_id: target.id }),
      outcome: "success",
      details: {
        approvalId: row.id,
        action,
        approvers: policy.approvers,
        ...(context ? { context } : {}),
      },
    });
    return {
      status: "pending_approval",
      message: `${action} on ${target.name} waits for an approver (approval ${row.id}, expires ${row.expires_at}).`,
      approval: toApproval(row),
    };
  }

  /** The latest approval of a run that waits for review (its state brought up to date). */
  async forRun(orgId: string, runId: string): Promise<Selectable<ApprovalTable> | undefined> {
    await this.#expireDue(orgId);
    return this.db
      .selectFrom("approvals")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("shell_id", "=", runId)
      .where("action", "=", "run")
      .orderBy("created_at", "desc")
      .executeTakeFirst();
  }

  async list(caller: Caller, state?: Approval["state"]): Promise<Approval[]> {
    await this.#expireDue(caller.orgId);
    let q = this.db.selectFrom("approvals").selectAll().where("org_id", "=", caller.orgId);
    if (state) q = q.where("state", "=", state);
    return (await q.orderBy("created_at", "desc").limit(500).execute()).map(toApproval);
  }

  async get(caller: Caller, approvalId: string): Promise<Approval> {
    return toApproval(await this.#row(caller.orgId, approvalId));
  }

  /**
   * Records an approver's decision on a pending approval. Only listed approvers decide, and never
   * on a request they control (`iam/separation-of-duties.ts`). Returns the row as decided; running a granted action is the caller's job.
   */
  async decide(
    caller: Caller,
    approvalId: string,
    decision: "granted" | "denied",
    reason: string,
  ): Promise<Selectable<ApprovalTable>> {
    const row = await this.#row(caller.orgId, approvalId);
    if (row.state !== "pending")
      throw new AppError("approval_closed", `Approval ${row.id} is already ${row.state}.`, {
        state: row.state,
      });
    const policy = await this.policies.get(caller.orgId);
    const isApprover = caller.actor.type === "user" && policy.approvers.includes(caller.actor.id);
    const conflict = isApprover ? await separationOfDutiesConflict(this.db, row, caller) : null;
    if (!isApprover || conflict) {
      await this.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: `approval.${decision === "granted" ? "grant" : "deny"}`,
        target: targetOf(row),
        outcome: "denied",
        details: { approvalId: row.id, reason: conflict ?? "not a listed approver" },
      });
      throw conflict
        ? new AppError(
            "separation_of_duties",
            `You cannot decide this request: ${conflict}. Another approver must.`,
            { approvalId: row.id, reason: conflict },
          )
        : new AppError("forbidden", "Only the org's listed approvers can decide approvals.");
    }
    const decidedAt = nowIso();
    const updated = await this.db
      .updateTable("approvals")
      .set({ state: decision, decided_by: caller.actor.id, reason, decided_at: decidedAt })
      .where("id", "=", row.id)
      .where("state", "=", "pending")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0)
      throw new AppError("approval_closed", `Approval ${row.id} was decided meanwhile.`);
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: `approval.${decision === "granted" ? "grant" : "deny"}`,
      target: targetOf(row),
      outcome: "success",
      details: { approvalId: row.id, action: row.action, reason, requestedBy: row.requested_by_id },
    });
    return { ...row, state: decision, decided_by: caller.actor.id, reason, decided_at: decidedAt };
  }

  /**
   * The requester takes back their own pending approval: it ends `withdrawn` and its action never
   * runs. Anyone else in the org is refused (`forbidden`, recorded); a closed one is
   * `approval_closed`. Returns the row as withdrawn; ending what it held back (a run waiting for
   * review) is the caller's job.
   */
  async withdraw(
    caller: Caller,
    approvalId: string,
    reason: string | undefined,
  ): Promise<Selectable<ApprovalTable>> {
    const row = await this.#row(caller.orgId, approvalId);
    const own =
      row.requested_by_type === caller.actor.type && row.requested_by_id === caller.actor.id;
    if (!own) {
      await this.activity.recordFor(
        caller,
        "approval.withdraw",
        targetOf(row),
        { approvalId: row.id, reason: "not the requester" },
        "denied",
      );
      throw new AppError("forbidden", "Only the requester of an approval can withdraw it.", {
        approvalId: row.id,
      });
    }
    if (row.state !== "pending")
      throw new AppError("approval_closed", `Approval ${row.id} is already ${row.state}.`, {
        state: row.state,
      });
    const why = reason ?? `withdrawn by ${caller.actor.id}`;
    if (!(await markWithdrawn(this.db, row, caller.actor.id, why)))
      throw new AppError("approval_closed", `Approval ${row.id} was decided meanwhile.`);
    await this.activity.recordFor(caller, "approval.withdraw", targetOf(row), {
      approvalId: row.id,
      action: row.action,
      reason: why,
    });
    return this.#row(caller.orgId, row.id);
  }

  /** Closes the pending approvals held on a shell or run that is gone (see {@link closePendingApprovals}). */
  closePending(orgId: string, targetId: string, actor: Actor, reason: string): Promise<number> {
    return closePendingApprovals(this.db, this.activity, { orgId, targetId, actor, reason });
  }

  /**
   * Sets how granted approvals of these actions are run: the service that owns each action
   * registers itself here (shell actions, runs, project egress).
   */
  performWith(actions: readonly ApprovalAction[], performer: GrantedActionPerformer): void {
    for (const action of actions) this.#performers.set(action, performer);
  }

  /**
   * A listed approver grants a pending approval: the action runs as its original requester, with
   * the requester's permissions as they are now (a revoked key, a holder who lost
   * `shells:instances:control`, or an agent that lost its entitlement, runs nothing), and the outcome is stored on the approval.
   */
  async grant(caller: Caller, approvalId: string, reason: string): Promise<Approval> {
    const row = await this.decide(caller, approvalId, "granted", reason);
    const requester = await this.#requester(row);
    const clearance: GateClearance = { approvalId: row.id, approvedBy: caller.actor.id };
    const perform = this.#performers.get(row.action);
    let outcome = "success";
    // The scope the request itself needed: a create needs create, every other step control.
    const scope: Scope =
      row.action === "shell_create" ? "shells:instances:create" : "shells:instances:control";
    if (!requester || !requester.scopes.includes(scope)) {
      outcome = `forbidden: the requester no longer holds ${scope}`;
    } else if (
      requester.actor.type === "agent" &&
      !requester.entitlements.includes(AGENT_ENTITLEMENT)
    ) {
      // An agent without the entitlement acts through no door, a granted approval included.
      outcome = `entitlement_required: the requesting agent no longer holds ${AGENT_ENTITLEMENT}`;
    } else if (!perform) {
      outcome = "internal: no performer is registered for granted actions";
    } else {
      try {
        await perform(requester, row, clearance);
      } catch (error) {
        outcome =
          error instanceof AppError
            ? `${error.code}: ${error.message}`
            : `failed: ${error instanceof Error ? error.message : String(error)}`;
      }
    }
    await this.recordOutcome(row.id, outcome);
    return this.get(caller, row.id);
  }

  /** The requester of an approval as a caller now, or null when their key or membership is gone. */
  async #requester(row: Selectable<ApprovalTable>): Promise<Caller | null> {
    const holder = { orgId: row.org_id, type: row.requested_by_type, id: row.requested_by_id };
    if (row.requested_key_id === null)
      return resolveCaller(this.db, holder, {
        keyId: null,
        scopes: ["shells:instances:create", "shells:instances:control"],
      });
    const key = await this.db
      .selectFrom("api_keys")
      .select(["scopes", "revoked_at", "expires_at"])
      .where("org_id", "=", row.org_id)
      .where("id", "=", row.requested_key_id)
      .executeTakeFirst();
    if (!key || keyLapse(key)) return null;
    return resolveCaller(this.db, holder, {
      keyId: row.requested_key_id,
      scopes: JSON.parse(key.scopes) as Scope[],
    });
  }

  /** Stores what running a granted action did. */
  async recordOutcome(approvalId: string, outcome: string): Promise<void> {
    await this.db.updateTable("approvals").set({ outcome }).where("id", "=", approvalId).execute();
  }

  async #row(orgId: string, approvalId: string): Promise<Selectable<ApprovalTable>> {
    await this.#expireDue(orgId);
    const row = await this.db
      .selectFrom("approvals")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", approvalId)
      .executeTakeFirst();
    if (!row)
      throw new AppError("not_found", `No approval ${approvalId}.`, {
        resource: "approval",
        id: approvalId,
      });
    return row;
  }

  async #expireDue(orgId: string): Promise<void> {
    await this.db
      .updateTable("approvals")
      .set({ state: "expired" })
      .where("org_id", "=", orgId)
      .where("state", "=", "pending")
      .where("expires_at", "<=", nowIso())
      .execute();
  }
}
