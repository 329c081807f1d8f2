import type {
  ApprovalContext,
  PendingApproval,
  ShellBindingAttach,
  TemplateDefinition,
} from "@shells/contract";
import type { Kysely } from "kysely";
import type { BindingGrant } from "../egress/binding-proxy.js";
import type { EgressService } from "../egress/egress-service.js";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import type { ActivityService } from "../services/activity-service.js";
import type { BindingService } from "../services/binding-service.js";
import type { Database } from "../store/schema.js";
import { setShellBindings, type ShellRow } from "../store/shells-store.js";
import { bindingGrantsDiff } from "./approval-diff.js";
import type { ApprovalGate, GateClearance } from "./approval-gate.js";
import { grantsOf, recordShellAction } from "./shell-records.js";

/** What attaching and detaching bindings on running shells needs. */
export interface ShellBindingsContext {
  db: Kysely<Database>;
  activity: ActivityService;
  gate: ApprovalGate;
  egress: EgressService | undefined;
  bindings: BindingService | undefined;
  /** The definition of a shell's recorded template (`name@version`), or null. */
  templateOf(orgId: string, ref: string): Promise<TemplateDefinition | null>;
}

/** Shell states whose sandbox (and proxy) a grant can still reach. */
const ATTACHABLE = new Set(["running", "paused", "stopped", "provisioning"]);

/**
 * The context an approver sees for a binding grant that a template asks review of: who asks is
 * on the approval; here what (the bindings), the template and the policy, and the diff of grants.
 */
export function bindingReviewContext(
  summary: string,
  template: { ref: string; sha256?: string },
  before: readonly string[],
  after: readonly string[],
): ApprovalContext {
  return {
    summary,
    template: template.ref,
    ...(template.sha256 ? { templateSha256: template.sha256 } : {}),
    policy: `template ${template.ref} requires review of binding grants`,
    bindings: after.filter((name) => !before.includes(name)),
    diff: bindingGrantsDiff(before, after),
  };
}

/**
 * Grants a service binding to a live shell, or parks the grant for a listed approver when the
 * shell's template asks review of binding grants; otherwise it passes the org's `binding_attach`
 * gate (none, typed confirmation, or approvers). The shell's proxy reads its grants at every
 * binding call, so the grant holds from the next call on, without a restart. A template that
 * locks `bindings` is the shell's policy contract: only its own bindings may be attached.
 * Call under the shell's lifecycle lock.
 */
export async function attachBinding(
  ctx: ShellBindingsContext,
  caller: Caller,
  row: ShellRow,
  { binding: name, confirm }: ShellBindingAttach,
  clearance?: GateClearance,
): Promise<"attached" | "unchanged" | PendingApproval> {
  if (!ctx.bindings || !ctx.egress)
    throw new AppError(
      "bindings_unavailable",
      "Service bindings need the egress proxy, which this server does not run.",
    );
  if (!ATTACHABLE.has(row.status))
    throw new AppError("invalid_state", `Shell ${row.name} is ${row.status}.`, {
      status: row.status,
    });
  const held = grantsOf(row);
  if (held.some((grant) => grant.name === name)) return "unchanged";
  const [grant] = await ctx.bindings.grantsFor(row.org_id, [name]);
  if (!grant) throw new AppError("binding_not_found", `No binding ${name}.`, { binding: name });
  // A shell started without a proxy has no route to one inside its sandbox.
  if (!ctx.egress.running(row.id))
    throw new AppError(
      "invalid_state",
      `Shell ${row.name} has no egress proxy (network ${row.network}, no binding at launch): create it with network internet or with a binding to attach bindings later.`,
      { network: row.network },
    );
  const definition = row.template ? await ctx.templateOf(row.org_id, row.template) : null;
  if (definition?.locks?.includes("bindings") && !(definition.bindings ?? []).includes(name)) {
    await recordShellAction(ctx.activity, caller, row.id, "binding_attach", "denied", {
      binding: name,
      reason: `template ${row.template} locks bindings`,
    });
    throw new AppError(
      "template_locked",
      `The template locks bindings: ${name} is not among the bindings of ${row.template}.`,
      { field: "bindings", template: row.template },
    );
  }
  const before = held.map((g) => g.name);
  const summary = `attach service binding ${name} to shell ${row.name}`;
  let cleared = clearance;
  if (!cleared && definition?.reviewBindings && row.template)
    // The template's review waits for an approver whatever the org's gate says.
    return ctx.gate.park(
      caller,
      row,
      "binding_attach",
      { binding: name },
      bindingReviewContext(summary, { ref: row.template }, before, [...before, name]),
    );
  if (!cleared) {
    const decision = await ctx.gate
      .check(
        caller,
        row,
        "binding_attach",
        confirm,
        { binding: name },
        {
          summary,
          bindings: [name],
          diff: bindingGrantsDiff(before, [...before, name]),
        },
      )
      .catch(async (error: unknown) => {
        await recordShellAction(ctx.activity, caller, row.id, "binding_attach", "denied", {
          binding: name,
          reason: error instanceof Error ? error.message : String(error),
        });
        throw error;
      });
    if ("pending" in decision) return decision.pending;
    cleared = decision.clearance;
  }
  await setGrants(ctx, row, [...held, grant]);
  await recordShellAction(ctx.activity, caller, row.id, "binding_attach", "success", {
    binding: name,
    diff: bindingGrantsDiff(before, [...before, name]),
    ...cleared,
  });
  return "attached";
}

/** Takes a service binding from a live shell: from its next binding call on, it is not granted. */
export async function detachBinding(
  ctx: ShellBindingsContext,
  caller: Caller,
  row: ShellRow,
  name: string,
): Promise<void> {
  const held = grantsOf(row);
  if (!held.some((grant) => grant.name === name))
    throw new AppError("binding_not_found", `Shell ${row.name} holds no binding ${name}.`, {
      binding: name,
    });
  const before = held.map((g) => g.name);
  await setGrants(
    ctx,
    row,
    held.filter((grant) => grant.name !== name),
  );
  await recordShellAction(ctx.activity, caller, row.id, "binding_detach", "success", {
    binding: name,
    diff: bindingGrantsDiff(
      before,
      before.filter((n) => n !== name),
    ),
  });
}

async function setGrants(
  ctx: ShellBindingsContext,
  row: ShellRow,
  grants: readonly BindingGrant[],
): Promise<void> {
  await setShellBindings(
    ctx.db,
    row.org_id,
    row.id,
    grants.length > 0 ? JSON.stringify(grants) : null,
  );
  ctx.egress?.updateGrants(row.id, grants);
}
