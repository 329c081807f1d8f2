import { z } from "zod";
import { EgressRuleLists } from "./egress-rules.js";
import { ShellPath } from "./files.js";
import { InterpreterRequest, RunCreate } from "./runs.js";
import {
  Capability,
  ExecRequest,
  FORK_FIELDS,
  withForkRules,
  Language,
  NetworkMode,
  EgressCidr,
  RuntimeClass,
  ShellCreate,
} from "./shells.js";

/** Membership roles, least privilege first. */
export const Role = z.enum(["viewer", "developer", "admin", "owner"]);
export type Role = z.infer<typeof Role>;

/** Product scopes an API key or token can carry (seed 001, exactly). */
export const Scope = z.enum([
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
]);
export type Scope = z.infer<typeof Scope>;

/** The scopes each role may exercise. A key's effective scopes are its own scopes within its holder's role. */
export const ROLE_SCOPES: Record<Role, readonly Scope[]> = {
  viewer: ["shells:instances:read"],
  developer: Scope.options,
  admin: Scope.options,
  owner: Scope.options,
};

/** True when `role` is at least `minimum`. */
export function roleAtLeast(role: Role, minimum: Role): boolean {
  return Role.options.indexOf(role) >= Role.options.indexOf(minimum);
}

/** The one entitlement agents need to use the agent gate. */
export const Entitlement = z.enum(["shells.agent.invoke"]);
export type Entitlement = z.infer<typeof Entitlement>;

const resourceName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "lowercase letters, digits and inner dashes");
const id = z.string().min(1).max(64);

/** A user's membership in the org. */
export const Member = z.strictObject({
  id: z.string(),
  email: z.string(),
  role: Role,
  /** `oidc` members sign in through the identity provider; `local` ones only hold API keys. */
  source: z.enum(["local", "oidc"]),
  createdAt: z.iso.datetime(),
  disabledAt: z.iso.datetime().nullable(),
});
export type Member = z.infer<typeof Member>;

export const MemberCreate = z.strictObject({ email: z.email().max(254), role: Role });
export const MemberUpdate = z.strictObject({
  role: Role.optional(),
  disabled: z.boolean().optional(),
});

/** A non-human principal. It acts only through its API keys and, at the gate, only with the entitlement. */
export const Agent = z.strictObject({
  id: z.string(),
  name: z.string(),
  role: Role,
  createdAt: z.iso.datetime(),
  disabledAt: z.iso.datetime().nullable(),
});
export type Agent = z.infer<typeof Agent>;
export const AgentCreate = z.strictObject({
  name: resourceName,
  role: Role.exclude(["owner"]).default("developer"),
});

/** A user or an agent of the org, by id. */
export const PrincipalRef = z.strictObject({ type: z.enum(["user", "agent"]), id });

/** An API key as listed: never its secret. */
export const ApiKey = z.strictObject({
  id: z.string(),
  name: z.string(),
  principal: PrincipalRef,
  scopes: z.array(Scope),
  /** Who minted the key: its holder, or an admin minting for an agent. */
  createdBy: PrincipalRef.nullable(),
  createdAt: z.iso.datetime(),
  lastUsedAt: z.iso.datetime().nullable(),
  revokedAt: z.iso.datetime().nullable(),
  /** From this time on the key is refused, as if revoked; null: it lasts until revoked. */
  expiresAt: z.iso.datetime().nullable(),
});
export type ApiKey = z.infer<typeof ApiKey>;

export const ApiKeyCreate = z.strictObject({
  name: z.string().min(1).max(100),
  scopes: z.array(Scope).min(1),
  /**
   * Whom the key acts for; defaults to the caller. A key acts as its holder, so it is minted only for
   * yourself, or by an admin for an agent — never for another user.
   */
  principal: PrincipalRef.optional(),
  /** When the key stops working (in the future); left out, it lasts until revoked. */
  expiresAt: z.iso.datetime().optional(),
});

/** A newly created key. `token` is shown this once and never again. */
export const ApiKeyCreated = z.strictObject({ key: ApiKey, token: z.string() });

/** A grant of an entitlement to a principal. */
export const EntitlementGrant = z.strictObject({
  id: z.string(),
  entitlement: Entitlement,
  principal: PrincipalRef,
  grantedBy: z.string(),
  createdAt: z.iso.datetime(),
});
export type EntitlementGrant = z.infer<typeof EntitlementGrant>;
export const EntitlementGrantCreate = z.strictObject({
  entitlement: Entitlement,
  principal: PrincipalRef,
});

export const Project = z.strictObject({
  id: z.string(),
  name: z.string(),
  createdAt: z.iso.datetime(),
});
export type Project = z.infer<typeof Project>;
export const ProjectCreate = z.strictObject({ name: resourceName });

/**
 * Actions an org can put behind an approval gate: each destroys work or widens reach. `restore`
 * discards everything written since the snapshot; `restart` ends every running process;
 * `egress_change` widens what a running `internet` shell may reach (narrowing is never gated);
 * `project_egress_change` widens a project's egress rules (the same: narrowing is never gated).
 */
export const GatedAction = z.enum([
  "stop",
  "wipe_state",
  "reinstall_os",
  "delete",
  "restore",
  "restart",
  "egress_change",
  "binding_attach",
  "project_egress_change",
]);
export type GatedAction = z.infer<typeof GatedAction>;

/** How one gated action is approved: not at all, by typed confirmation, or by a named approver. */
export const GateMode = z.enum(["none", "confirm", "approvers"]);
export type GateMode = z.infer<typeof GateMode>;

/** The largest resource limits a shell of the org may ask for (same units as `Resources`). */
export const MaxResources = z.strictObject({
  cpu: z.number().min(0.1).max(1024),
  memoryMb: z
    .int()
    .min(16)
    .max(16 * 1024 * 1024),
  pids: z
    .int()
    .min(8)
    .max(4 * 1024 * 1024),
  diskMb: z
    .int()
    .min(16)
    .max(64 * 1024 * 1024),
});
export type MaxResources = z.infer<typeof MaxResources>;

/** Snapshot quotas: archives counted by their size on the host's disk. */
export const SnapshotQuota = z.strictObject({
  /** Snapshots one shell may hold. */
  countPerShell: z.int().min(0).max(1000),
  /** Archive MiB one shell's snapshots may hold together. */
  mbPerShell: z
    .int()
    .min(0)
    .max(64 * 1024 * 1024),
  /** Archive MiB the org's live shells' snapshots may hold together. */
  mbPerOrg: z
    .int()
    .min(0)
    .max(64 * 1024 * 1024),
});
export type SnapshotQuota = z.infer<typeof SnapshotQuota>;

/**
 * What `internet` shells of an org may reach through their egress proxy, and how much they may
 * use it. By default only public addresses, any host, any port. `allowCidrs` opens non-public
 * ranges explicitly (a lab network, an internal mirror); project and template rules and a shell's
 * own allowlist can only narrow this.
 */
export const OrgEgressPolicy = EgressRuleLists.extend({
  /** Connections one shell may have open through its proxy at once. */
  maxConnections: z.int().min(1).max(4096),
  /**
   * Bytes (both directions) one shell may move through its proxy; past it, its connections end and
   * the shell is stopped with kill reason `egress_limit`.
   */
  maxBytes: z.int().min(1024).max(Number.MAX_SAFE_INTEGER),
  /**
   * Requests one shell may make through its proxy per second (HTTP requests, tunnels, redirected
   * connections, DNS questions), with bursts of as many; past it, refused as `rate_limited`.
   */
  maxRequestsPerSecond: z.int().min(1).max(10_000),
});
export type OrgEgressPolicy = z.infer<typeof OrgEgressPolicy>;

/** The org's rules for webhook destinations. */
export const OrgWebhookPolicy = z.strictObject({
  /**
   * Non-public ranges webhook endpoints may be at all the same (a receiver on the host's loopback,
   * one on the private network). Every other endpoint must resolve only to public addresses.
   */
  allowCidrs: z.array(EgressCidr).max(256),
});
export type OrgWebhookPolicy = z.infer<typeof OrgWebhookPolicy>;

/** Org-wide governance settings. */
export const OrgPolicy = z.strictObject({
  /** Minimum runtime class; creating a shell below it is refused. */
  isolationFloor: RuntimeClass,
  /** Regions shells may be placed in; empty means any. */
  allowedRegions: z.array(z.string().min(1).max(64)),
  /** Lifetime of term credentials, seconds. */
  termCredentialTtlSeconds: z
    .int()
    .min(30)
    .max(24 * 3600),
  defaultNetwork: NetworkMode,
  approvalGates: z.strictObject({
    stop: GateMode,
    wipe_state: GateMode,
    reinstall_os: GateMode,
    delete: GateMode,
    restore: GateMode,
    restart: GateMode,
    egress_change: GateMode,
    binding_attach: GateMode,
    project_egress_change: GateMode,
  }),
  /** User ids who may decide approvals. */
  approvers: z.array(id),
  /** How long a pending approval waits before it expires, seconds. */
  approvalTtlSeconds: z
    .int()
    .min(60)
    .max(7 * 24 * 3600),
  /** Largest resource limits a shell may ask for; the host's capacity caps them further. */
  maxResources: MaxResources,
  /** How much snapshot archive space shells may hold on the host. */
  snapshotQuota: SnapshotQuota,
  /** What `internet` shells may reach (always present in responses). */
  egress: OrgEgressPolicy.optional(),
  /** Where webhook endpoints may be (always present in responses). */
  webhooks: OrgWebhookPolicy.optional(),
});
export type OrgPolicy = z.infer<typeof OrgPolicy>;

/** A partial update of the org policy. */
export const OrgPolicyUpdate = z.strictObject({
  isolationFloor: RuntimeClass.optional(),
  allowedRegions: z.array(z.string().min(1).max(64)).max(64).optional(),
  termCredentialTtlSeconds: z
    .int()
    .min(30)
    .max(24 * 3600)
    .optional(),
  defaultNetwork: NetworkMode.optional(),
  approvalGates: z
    .strictObject({
      stop: GateMode.optional(),
      wipe_state: GateMode.optional(),
      reinstall_os: GateMode.optional(),
      delete: GateMode.optional(),
      restore: GateMode.optional(),
      restart: GateMode.optional(),
      egress_change: GateMode.optional(),
      binding_attach: GateMode.optional(),
      project_egress_change: GateMode.optional(),
    })
    .optional(),
  approvers: z.array(id).max(100).optional(),
  approvalTtlSeconds: z
    .int()
    .min(60)
    .max(7 * 24 * 3600)
    .optional(),
  maxResources: MaxResources.optional(),
  snapshotQuota: SnapshotQuota.optional(),
  /** Replaces the fields given; the others keep their values. */
  egress: OrgEgressPolicy.partial().optional(),
  /** Replaces the fields given; the others keep their values. */
  webhooks: OrgWebhookPolicy.partial().optional(),
});

/** A request to run a gated action, waiting for (or past) a named approver's decision. */
/**
 * What an approval holds back: a gated action on a shell, or `run`: the start of a run of a
 * template marked `reviewBeforeRun` (its `shellId` is then the run's id).
 */
/**
 * What an approval holds back: a gated action (`binding_attach` also waits whatever the org's gate
 * says when the shell's template asks review of binding grants), a `run` that waits for review, or
 * a `shell_create` granted bindings by a template that asks review of them (the shell is made once
 * granted).
 */
export const ApprovalAction = z.enum([...GatedAction.options, "run", "shell_create"]);
export type ApprovalAction = z.infer<typeof ApprovalAction>;

/**
 * What a widening would change: the rules before and after, and each change in words, split into
 * those that widen (why it waits) and those that narrow.
 */
export const ApprovalDiff = z.strictObject({
  /** What the rules are about: `shell egress` or `project egress`. */
  subject: z.string(),
  before: z.unknown(),
  after: z.unknown(),
  /** Each change that widens reach (`allowHosts + api.example.com`, `denyPorts - 25`). */
  widens: z.array(z.string()),
  /** Each change that narrows it. */
  narrows: z.array(z.string()),
});
export type ApprovalDiff = z.infer<typeof ApprovalDiff>;

/**
 * What the approver is shown beyond the action: for a `run`, its template and what it runs; for a
 * widening, what it asks for and the diff of the rules.
 */
export const ApprovalContext = z.strictObject({
  /** What is asked, in words (`widen the egress of shell api-1`). */
  summary: z.string().optional(),
  /** The template, as `name@version`, and the SHA-256 of that version's definition. */
  template: z.string().optional(),
  templateSha256: z.string().optional(),
  /** Why review is required (the policy that asks for it). */
  policy: z.string().optional(),
  /** SHA-256 of the code, command or git entrypoint the run would start. */
  codeSha256: z.string().optional(),
  language: z.string().optional(),
  /** For a run granted service bindings by a template that asks review of them: their names. */
  bindings: z.array(z.string()).optional(),
  /** For a widening: the rules before and after. */
  diff: ApprovalDiff.optional(),
});
export type ApprovalContext = z.infer<typeof ApprovalContext>;

/** Where an approval stands: `pending`, then `granted`, `denied`, `expired` or `withdrawn`. */
export const ApprovalState = z.enum(["pending", "granted", "denied", "expired", "withdrawn"]);
export type ApprovalState = z.infer<typeof ApprovalState>;

export const Approval = z.strictObject({
  id: z.string(),
  /**
   * What it holds back: the shell, the run (`run`), or the project (`project_egress_change`). For
   * a `shell_create`: the id the shell will have once granted.
   */
  shellId: z.string(),
  action: ApprovalAction,
  /** For a `run`: what it runs and why it waits (set on approvals made since templates). */
  context: ApprovalContext.nullable().optional(),
  /**
   * `withdrawn`: its requester took it back, or its shell was deleted, before anyone decided
   * (`decidedBy` says who, `reason` why).
   */
  state: ApprovalState,
  requestedBy: PrincipalRef,
  decidedBy: z.string().nullable(),
  reason: z.string().nullable(),
  /** After a grant: what running the action did: `success`, or `<error code>: <message>`. */
  outcome: z.string().nullable(),
  createdAt: z.iso.datetime(),
  expiresAt: z.iso.datetime(),
  decidedAt: z.iso.datetime().nullable(),
});
export type Approval = z.infer<typeof Approval>;
export const ApprovalDecision = z.strictObject({ reason: z.string().min(1).max(1000) });
/** Body of `POST /api/v1/approvals/:id/withdraw` (the reason is optional). */
export const ApprovalWithdrawal = z.strictObject({
  reason: z.string().min(1).max(1000).optional(),
});

/** Tools the agent gate serves. */
export const AgentTool = z.enum([
  "shells_list",
  "shells_create",
  "shells_action",
  "shells_exec",
  "shells_term",
  "shells_interpreter",
  "shells_run",
  "shells_files",
  "shells_fork",
]);
export type AgentTool = z.infer<typeof AgentTool>;

/** Arguments of each agent tool; the same contract as the REST bodies. */
export const AGENT_TOOL_ARGUMENTS = {
  shells_create: ShellCreate,
  shells_exec: ExecRequest.extend({ shell: id }),
  shells_list: z.strictObject({
    status: z.enum(["provisioning", "running", "paused", "stopped", "error"]).optional(),
    language: Language.optional(),
    runtime: RuntimeClass.optional(),
    limit: z.int().min(1).max(200).default(50),
    cursor: z.string().max(512).optional(),
  }),
  shells_action: z.strictObject({
    shell: id,
    capability: z.union([Capability, z.literal("delete")]),
    confirm: z.string().max(256).optional(),
    name: resourceName.optional(),
    snapshot: resourceName.optional(),
    tail: z.int().min(1).max(10000).optional(),
  }),
  shells_term: z.strictObject({ shell: id }),
  shells_fork: withForkRules(z.strictObject({ shell: id, ...FORK_FIELDS })),
  shells_interpreter: InterpreterRequest.extend({ shell: id }),
  /** The run is waited for (up to its own timeout) and answered with its result. */
  shells_run: RunCreate,
  shells_files: z.strictObject({
    shell: id,
    op: z.enum(["list", "read", "write"]),
    path: ShellPath,
    /** `write`: the new content. */
    content: z
      .string()
      .max(8 * 1024 * 1024)
      .optional(),
    encoding: z.enum(["utf8", "base64"]).default("utf8"),
  }),
} as const;

/** Body of `POST /api/agent/invoke`. `arguments` are validated per tool. */
export const AgentInvokeRequest = z.strictObject({
  tool: AgentTool,
  arguments: z.record(z.string(), z.unknown()).default({}),
});

/** What the gate answers: the tool's result, the same shape the REST route returns. */
export const AgentInvokeResult = z.strictObject({ tool: AgentTool, result: z.unknown() });
