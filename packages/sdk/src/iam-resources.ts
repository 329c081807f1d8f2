/**
 * The org's governance through the client: members, agents, API keys, entitlements, projects, org
 * policy and approvals. Each class is one namespace of {@link ShellsClient} (`shells.members`, …);
 * every method mirrors one REST route and sends through the client, so it shares its token, timeout
 * and errors.
 */
import type {
  AgentCreate as AgentCreateSchema,
  Agent,
  ApiKey,
  ApiKeyCreate as ApiKeyCreateSchema,
  ApiKeyCreated as ApiKeyCreatedSchema,
  Approval,
  ApprovalDecision as ApprovalDecisionSchema,
  EgressRules,
  EntitlementGrant,
  EntitlementGrantCreate as EntitlementGrantCreateSchema,
  Member,
  MemberCreate as MemberCreateSchema,
  MemberUpdate as MemberUpdateSchema,
  OrgPolicy,
  PendingApproval,
  OrgPolicyUpdate as OrgPolicyUpdateSchema,
  Project,
  ProjectCreate as ProjectCreateSchema,
  ProjectEgress,
  RunRetention,
} from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import type { SchemaInput, SchemaOutput } from "./internal/schema-types.js";
import type { IdempotentRequestOptions, RequestOptions } from "./shells-client.js";

/** Body of `members.create()`: the new member's email and role. */
export type MemberCreate = SchemaInput<typeof MemberCreateSchema>;
/** Body of `members.update()`: a new role, and/or `disabled: true` to lock the member out. */
export type MemberUpdate = SchemaInput<typeof MemberUpdateSchema>;
/** Body of `agents.create()`: a name (lowercase, digits, inner dashes) and a role (default `developer`). */
export type AgentCreate = SchemaInput<typeof AgentCreateSchema>;
/** Whom a key or an entitlement belongs to: a user (member) or an agent, by id. */
export type PrincipalRef = ApiKey["principal"];
/**
 * Body of `keys.create()`. `principal` defaults to the caller; keys for agents need the admin role.
 * `expiresAt` (ISO time, in the future) makes a key that is refused from then on.
 */
export type ApiKeyCreate = SchemaInput<typeof ApiKeyCreateSchema>;
/** A newly issued key: its record and its secret `token`, which the server shows this once only. */
export type ApiKeyCreated = SchemaOutput<typeof ApiKeyCreatedSchema>;
/** Body of `entitlements.grant()`: which entitlement, to whom. */
export type EntitlementGrantCreate = SchemaInput<typeof EntitlementGrantCreateSchema>;
/** Body of `projects.create()`. */
export type ProjectCreate = SchemaInput<typeof ProjectCreateSchema>;
/** Body of `policy.update()`: only the fields given change; each gate is changed on its own. */
export type OrgPolicyUpdate = SchemaInput<typeof OrgPolicyUpdateSchema>;
/** Body of `approvals.grant()` and `approvals.deny()`: why (recorded in the activity log). */
export type ApprovalDecision = SchemaInput<typeof ApprovalDecisionSchema>;
/** Where an approval stands: `pending`, then `granted`, `denied`, `expired` or `withdrawn`. */
export type ApprovalState = Approval["state"];

/** Filters of {@link ApprovalsApi.list}. */
export interface ListApprovalsQuery {
  /** Only approvals in this state. */
  state?: ApprovalState | undefined;
}

/** `shells.members`: the org's users and their roles. Changes need the admin role. */
export class MembersApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.members`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Every member of the org, disabled ones included (`disabledAt` set). */
  async list(options: RequestOptions = {}): Promise<Member[]> {
    const { items } = await this.#call<{ items: Member[] }>("GET", "/api/v1/members", options);
    return items;
  }

  /** Adds a member with a role. Only owners add owners; an email already in the org is `name_taken`. */
  create(body: MemberCreate, options: RequestOptions = {}): Promise<Member> {
    return this.#call<Member>("POST", "/api/v1/members", { ...options, body });
  }

  /**
   * Changes a member's role, or disables (`disabled: true`) or re-enables them. Only owners touch
   * owners; demoting or disabling the last owner is refused with `last_owner`.
   */
  update(memberId: string, body: MemberUpdate, options: RequestOptions = {}): Promise<Member> {
    return this.#call<Member>("PATCH", `/api/v1/members/${segment(memberId)}`, {
      ...options,
      body,
    });
  }

  /** Removes a member: they are disabled and every key they hold is revoked. */
  remove(memberId: string, options: RequestOptions = {}): Promise<Member> {
    return this.#call<Member>("DELETE", `/api/v1/members/${segment(memberId)}`, options);
  }
}

/**
 * `shells.agents`: non-human principals. An agent acts only through the keys issued to it
 * (`shells.keys.create({ principal: { type: "agent", id } })`), and at the agent gate only with the
 * `shells.agent.invoke` entitlement.
 */
export class AgentsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.agents`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Every agent of the org, disabled ones included. */
  async list(options: RequestOptions = {}): Promise<Agent[]> {
    const { items } = await this.#call<{ items: Agent[] }>("GET", "/api/v1/agents", options);
    return items;
  }

  /** Creates an agent (admins), with a role no higher than the caller's own. */
  create(body: AgentCreate, options: RequestOptions = {}): Promise<Agent> {
    return this.#call<Agent>("POST", "/api/v1/agents", { ...options, body });
  }

  /** Disables an agent: its keys are revoked and its entitlements withdrawn. */
  remove(agentId: string, options: RequestOptions = {}): Promise<Agent> {
    return this.#call<Agent>("DELETE", `/api/v1/agents/${segment(agentId)}`, options);
  }
}

/** `shells.keys`: API keys. Admins see and revoke the org's; everyone else their own. */
export class KeysApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.keys`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** The keys the caller may see. Secrets are never listed. */
  async list(options: RequestOptions = {}): Promise<ApiKey[]> {
    const { items } = await this.#call<{ items: ApiKey[] }>("GET", "/api/v1/keys", options);
    return items;
  }

  /**
   * Issues a key. The answer's `token` is the secret, returned this once and never again: store it
   * now. Scopes cannot exceed the caller's own nor the holder's role.
   */
  create(body: ApiKeyCreate, options: RequestOptions = {}): Promise<ApiKeyCreated> {
    return this.#call<ApiKeyCreated>("POST", "/api/v1/keys", { ...options, body });
  }

  /** Revokes a key: the next request with its token is refused (`unauthenticated`). */
  revoke(keyId: string, options: RequestOptions = {}): Promise<ApiKey> {
    return this.#call<ApiKey>("DELETE", `/api/v1/keys/${segment(keyId)}`, options);
  }
}

/** `shells.entitlements`: who holds which entitlement (today: `shells.agent.invoke`). */
export class EntitlementsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.entitlements`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Every grant in the org. */
  async list(options: RequestOptions = {}): Promise<EntitlementGrant[]> {
    const { items } = await this.#call<{ items: EntitlementGrant[] }>(
      "GET",
      "/api/v1/entitlements",
      options,
    );
    return items;
  }

  /** Grants an entitlement to an agent or a user (admins). Granting it twice returns the first grant. */
  grant(body: EntitlementGrantCreate, options: RequestOptions = {}): Promise<EntitlementGrant> {
    return this.#call<EntitlementGrant>("POST", "/api/v1/entitlements", { ...options, body });
  }

  /** Withdraws a grant, by the grant's id (admins). */
  revoke(grantId: string, options: RequestOptions = {}): Promise<EntitlementGrant> {
    return this.#call<EntitlementGrant>(
      "DELETE",
      `/api/v1/entitlements/${segment(grantId)}`,
      options,
    );
  }
}

/** `shells.projects`: the org's projects; a shell belongs to one (`ShellCreate.project`). */
export class ProjectsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.projects`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Every project of the org. */
  async list(options: RequestOptions = {}): Promise<Project[]> {
    const { items } = await this.#call<{ items: Project[] }>("GET", "/api/v1/projects", options);
    return items;
  }

  /** Creates a project (admins). A name already taken is `name_taken`. */
  create(body: ProjectCreate, options: RequestOptions = {}): Promise<Project> {
    return this.#call<Project>("POST", "/api/v1/projects", { ...options, body });
  }

  /** How long the project's runs keep their artifacts, changes and diffs (`effectiveDays`). */
  getRetention(project: string, options: RequestOptions = {}): Promise<RunRetention> {
    return this.#call<RunRetention>(
      "GET",
      `/api/v1/projects/${segment(project)}/retention`,
      options,
    );
  }

  /**
   * Sets the days the project's runs keep their artifacts, changes and diffs after they end
   * (admins); `null` removes the project's setting (the org's applies).
   */
  setRetention(
    project: string,
    days: number | null,
    options: IdempotentRequestOptions = {},
  ): Promise<RunRetention> {
    return this.#call<RunRetention>("PUT", `/api/v1/projects/${segment(project)}/retention`, {
      ...options,
      body: { days },
    });
  }

  /** A project's egress rules (`rules: {}` when it has none: the org's policy alone). */
  getEgress(project: string, options: RequestOptions = {}): Promise<ProjectEgress> {
    return this.#call<ProjectEgress>("GET", `/api/v1/projects/${segment(project)}/egress`, options);
  }

  /**
   * Replaces a project's egress rules (admins); `{}` removes them. Every `internet` shell of the
   * project keeps them from its next connection on; they narrow the org's policy and cannot widen
   * it (a list left out says nothing at the project's level). A change that widens the project's
   * rules passes the org's `project_egress_change` gate: under `approvers` the answer is a
   * {@link PendingApproval} (check with `isPendingApproval`) whose context carries the diff; under
   * `confirm`, pass `confirm` (the project's name).
   */
  setEgress(
    project: string,
    rules: EgressRules,
    options: IdempotentRequestOptions & { confirm?: string } = {},
  ): Promise<ProjectEgress | PendingApproval> {
    const { confirm, ...rest } = options;
    return this.#call<ProjectEgress | PendingApproval>(
      "PUT",
      `/api/v1/projects/${segment(project)}/egress`,
      { ...rest, body: confirm === undefined ? { rules } : { rules, confirm } },
    );
  }
}

/** `shells.policy`: the org's policy. Everyone reads it; admins change it. */
export class PolicyApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.policy`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Isolation floor, allowed regions, term-credential TTL, default network, approval gates. */
  get(options: RequestOptions = {}): Promise<OrgPolicy> {
    return this.#call<OrgPolicy>("GET", "/api/v1/org/policy", options);
  }

  /**
   * Changes the fields given and answers the whole policy as it now stands. Approvers must be
   * active members, and a gate set to `approvers` needs at least one.
   */
  update(body: OrgPolicyUpdate, options: RequestOptions = {}): Promise<OrgPolicy> {
    return this.#call<OrgPolicy>("PATCH", "/api/v1/org/policy", { ...options, body });
  }

  /** How long the org's runs keep their artifacts, changes and diffs where a project sets none. */
  getRetention(options: RequestOptions = {}): Promise<RunRetention> {
    return this.#call<RunRetention>("GET", "/api/v1/org/retention", options);
  }

  /**
   * Sets the days the org's runs keep their artifacts, changes and diffs after they end (admins);
   * `null` removes the org's setting (the server's default applies). Recorded as `retention.update`.
   */
  setRetention(days: number | null, options: IdempotentRequestOptions = {}): Promise<RunRetention> {
    return this.#call<RunRetention>("PUT", "/api/v1/org/retention", { ...options, body: { days } });
  }
}

/**
 * `shells.approvals`: destructive actions waiting for (or past) a listed approver's decision. An
 * action the org gates by `approvers` answers a `PendingApproval` whose `approval.id` is decided here.
 */
export class ApprovalsApi {
  readonly #call: ApiCall;

  /** @internal The client builds its namespaces; use `shells.approvals`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** Approvals, newest first; `{ state: "pending" }` for those still waiting. */
  async list(query: ListApprovalsQuery = {}, options: RequestOptions = {}): Promise<Approval[]> {
    const { items } = await this.#call<{ items: Approval[] }>("GET", "/api/v1/approvals", {
      ...options,
      query: { state: query.state },
    });
    return items;
  }

  /** One approval. Once granted, `outcome` says what running the action did (`success` or why not). */
  get(approvalId: string, options: RequestOptions = {}): Promise<Approval> {
    return this.#call<Approval>("GET", `/api/v1/approvals/${segment(approvalId)}`, options);
  }

  /**
   * Grants a pending approval (listed approvers only, never on their own request): the action runs
   * as its requester and the answer carries its `outcome`. A decided or expired approval is
   * `approval_closed`.
   */
  grant(
    approvalId: string,
    body: ApprovalDecision,
    options: RequestOptions = {},
  ): Promise<Approval> {
    return this.#call<Approval>("POST", `/api/v1/approvals/${segment(approvalId)}/grant`, {
      ...options,
      body,
    });
  }

  /** Denies a pending approval (listed approvers only); the action does not run. */
  deny(
    approvalId: string,
    body: ApprovalDecision,
    options: RequestOptions = {},
  ): Promise<Approval> {
    return this.#call<Approval>("POST", `/api/v1/approvals/${segment(approvalId)}/deny`, {
      ...options,
      body,
    });
  }

  /**
   * Withdraws your own pending approval: the held action never runs (a run waiting for review
   * ends `cancelled`). Someone else's is `forbidden`; a closed one is `approval_closed`.
   */
  withdraw(
    approvalId: string,
    body: { reason?: string } = {},
    options: RequestOptions = {},
  ): Promise<Approval> {
    return this.#call<Approval>("POST", `/api/v1/approvals/${segment(approvalId)}/withdraw`, {
      ...options,
      body,
    });
  }
}
