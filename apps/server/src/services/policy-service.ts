import type { OrgPolicy, RouteBody } from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { nowIso } from "../ids.js";
import { compiledOnce, type QueryParam } from "../store/compiled-query.js";
import type { Database } from "../store/schema.js";
import type { ActivityService } from "./activity-service.js";

/** The policy of an org that never changed it: no floor, any region, 5-minute credentials, no gates. */
export const DEFAULT_POLICY: OrgPolicy = {
  isolationFloor: "wasm",
  allowedRegions: [],
  termCredentialTtlSeconds: 300,
  defaultNetwork: "sealed",
  approvalGates: {
    stop: "none",
    wipe_state: "none",
    reinstall_os: "none",
    delete: "none",
    restore: "none",
    restart: "none",
    egress_change: "none",
    binding_attach: "none",
    project_egress_change: "none",
  },
  approvers: [],
  approvalTtlSeconds: 24 * 3600,
  maxResources: { cpu: 16, memoryMb: 64 * 1024, pids: 4096, diskMb: 100 * 1024 },
  snapshotQuota: { countPerShell: 10, mbPerShell: 10 * 1024, mbPerOrg: 50 * 1024 },
  egress: {
    allowHosts: [],
    denyHosts: [],
    allowCidrs: [],
    denyCidrs: [],
    allowPorts: [],
    denyPorts: [],
    maxConnections: 64,
    maxBytes: 1024 * 1024 * 1024,
    maxRequestsPerSecond: 500,
  },
  webhooks: { allowCidrs: [] },
};

const DEFAULT_EGRESS = DEFAULT_POLICY.egress as NonNullable<OrgPolicy["egress"]>;
const DEFAULT_WEBHOOKS = DEFAULT_POLICY.webhooks as NonNullable<OrgPolicy["webhooks"]>;

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The org's stored policy; every create and policy check reads it. */
const storedPolicy = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId">) =>
  db.selectFrom("org_policies").select("policy").where("org_id", "=", param("orgId")),
);

/** Reads and changes org policy. */
export class PolicyService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
  ) {}

  /** The org's policy (the default until an admin changes it). */
  async get(orgId: string): Promise<OrgPolicy> {
    const [row] = await storedPolicy(this.db, { orgId });
    if (!row) return DEFAULT_POLICY;
    const stored = JSON.parse(row.policy) as Partial<OrgPolicy>;
    // A policy stored before a gate or limit existed takes that field's default.
    return {
      ...DEFAULT_POLICY,
      ...stored,
      approvalGates: { ...DEFAULT_POLICY.approvalGates, ...stored.approvalGates },
      egress: { ...DEFAULT_EGRESS, ...stored.egress },
      webhooks: { ...DEFAULT_WEBHOOKS, ...stored.webhooks },
    };
  }

  /**
   * Removes a member who left or was disabled from the approver list. A gate left without any
   * approver falls back to typed confirmation rather than to no gate at all.
   */
  async dropApprover(orgId: string, userId: string): Promise<void> {
    const current = await this.get(orgId);
    if (!current.approvers.includes(userId)) return;
    const approvers = current.approvers.filter((id) => id !== userId);
    const approvalGates = { ...current.approvalGates };
    if (approvers.length === 0) {
      for (const [action, mode] of Object.entries(approvalGates)) {
        if (mode === "approvers") approvalGates[action as keyof typeof approvalGates] = "confirm";
      }
    }
    const next: OrgPolicy = { ...current, approvers, approvalGates };
    await this.db
      .insertInto("org_policies")
      .values({ org_id: orgId, policy: JSON.stringify(next), updated_at: nowIso() })
      .onConflict((oc) =>
        oc.column("org_id").doUpdateSet({ policy: JSON.stringify(next), updated_at: nowIso() }),
      )
      .execute();
  }

  /** Applies a partial update. Approvers must be active members; a gate set to `approvers` needs one. */
  async update(caller: Caller, body: RouteBody<"updatePolicy">): Promise<OrgPolicy> {
    const current = await this.get(caller.orgId);
    const next: OrgPolicy = {
      ...current,
      ...Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined)),
      approvalGates: {
        ...current.approvalGates,
        ...Object.fromEntries(
          Object.entries(body.approvalGates ?? {}).filter(([, v]) => v !== undefined),
        ),
      },
    };
    next.egress = { ...DEFAULT_EGRESS, ...current.egress, ...withoutUndefined(body.egress ?? {}) };
    next.webhooks = {
      ...DEFAULT_WEBHOOKS,
      ...current.webhooks,
      ...withoutUndefined(body.webhooks ?? {}),
    };
    next.approvers = [...new Set(next.approvers)];
    // Only a change of the approver list is checked against membership: members who left are
    // dropped from the list as they leave (see `dropApprover`).
    if (body.approvers && next.approvers.length > 0) {
      const found = await this.db
        .selectFrom("users")
        .select("id")
        .where("org_id", "=", caller.orgId)
        .where("id", "in", next.approvers)
        .where("disabled_at", "is", null)
        .execute();
      const unknown = next.approvers.filter((id) => !found.some((f) => f.id === id));
      if (unknown.length > 0) {
        throw new AppError(
          "validation_failed",
          `Approvers must be active members of this org: ${unknown.join(", ")}.`,
          { unknown },
        );
      }
    }
    const gatedByApprovers = Object.entries(next.approvalGates).filter(
      ([, mode]) => mode === "approvers",
    );
    if (gatedByApprovers.length > 0 && next.approvers.length === 0) {
      throw new AppError(
        "validation_failed",
        "A gate set to `approvers` needs at least one approver in `approvers`.",
      );
    }
    await this.db
      .insertInto("org_policies")
      .values({ org_id: caller.orgId, policy: JSON.stringify(next), updated_at: nowIso() })
      .onConflict((oc) =>
        oc.column("org_id").doUpdateSet({ policy: JSON.stringify(next), updated_at: nowIso() }),
      )
      .execute();
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action: "org.policy.update",
      target: { type: "org", id: caller.orgId },
      outcome: "success",
      details: { changed: Object.keys(body) },
    });
    return next;
  }
}
