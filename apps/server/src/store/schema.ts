import type { Generated } from "kysely";
import type { ApprovalAction } from "@shells/contract";

/** Tables of the control plane's store. Every row but `orgs` carries the org it belongs to. */
export interface Database {
  orgs: OrgTable;
  projects: ProjectTable;
  users: UserTable;
  api_keys: ApiKeyTable;
  shells: ShellTable;
  shell_logs: ShellLogTable;
  activity: ActivityTable;
  idempotency_keys: IdempotencyTable;
  agents: AgentTable;
  entitlements: EntitlementTable;
  org_policies: OrgPolicyTable;
  approvals: ApprovalTable;
  sessions: SessionTable;
  term_credentials: TermCredentialTable;
  port_urls: PortUrlTable;
  runs: RunTable;
  run_reviews: RunReviewTable;
  run_retention: RunRetentionTable;
  run_frames: RunFrameTable;
  oidc_logins: OidcLoginTable;
  oidc_accounts: OidcAccountTable;
  snapshots: SnapshotTable;
  bindings: BindingTable;
  templates: TemplateTable;
  template_versions: TemplateVersionTable;
  webhooks: WebhookTable;
  webhook_deliveries: WebhookDeliveryTable;
  usage_intervals: UsageIntervalTable;
  usage_rates: UsageRatesTable;
  project_caps: ProjectCapTable;
  project_egress_rules: ProjectEgressRulesTable;
  cap_alerts: CapAlertTable;
  activity_tree: ActivityTreeTable;
  audit_checkpoints: AuditCheckpointTable;
  leases: LeaseTable;
}

/** A lease on one kind of background work: who runs it, since and until when (store clock, ms). */
export interface LeaseTable {
  name: string;
  holder: string;
  acquired_at_ms: number;
  expires_at_ms: number;
}

/** A complete, aligned subtree of an org's activity tree: leaves [idx·2^level, (idx+1)·2^level). */
export interface ActivityTreeTable {
  org_id: string;
  level: number;
  idx: number;
  /** 32-byte SHA-256. */
  hash: Uint8Array;
}

/** A signed checkpoint of an org's activity tree. */
export interface AuditCheckpointTable {
  id: string;
  org_id: string;
  tree_size: number;
  /** Hex. */
  root_hash: string;
  time: string;
  key_id: string;
  /** Base64 Ed25519 signature over the contract's `checkpointSignedBytes`. */
  signature: string;
}

export interface OrgTable {
  id: string;
  name: string;
  created_at: string;
}

export interface ProjectTable {
  id: string;
  org_id: string;
  name: string;
  created_at: string;
}

export interface UserTable {
  id: string;
  org_id: string;
  email: string;
  role: "owner" | "admin" | "developer" | "viewer";
  created_at: string;
  source: Generated<"local" | "oidc">;
  oidc_subject: string | null;
  disabled_at: string | null;
}

export interface ApiKeyTable {
  id: string;
  org_id: string;
  principal_type: "user" | "agent";
  principal_id: string;
  name: string;
  /** SHA-256 of the whole key; the key itself is never stored. */
  key_hash: string;
  /** JSON array of scopes. */
  scopes: string;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
  /** When the key stops working (ISO time); null: it lasts until revoked (0024). */
  expires_at: string | null;
  /** Who minted the key: its holder, or an admin minting for an agent (null only before 0006). */
  created_by_type: "user" | "agent" | null;
  created_by_id: string | null;
}

export interface ShellTable {
  id: string;
  org_id: string;
  project_id: string;
  name: string;
  status: string;
  status_reason: string | null;
  language: string;
  runtime: string;
  network: string;
  region: string;
  /** JSON of ResolvedResources. */
  resources: string;
  /** JSON object of the shell's environment. Never returned by the API (only its keys). */
  env: string;
  backend: string;
  /** The shell's secret environment as a sealed box (`iam/sealed-box.ts`); null when it has none. */
  secret_env: string | null;
  /** JSON of the shell's own egress allowlist (ShellEgress); null: the levels above alone. */
  egress: string | null;
  /** JSON of the egress rules of the template version it was made from (EgressRules); null: none. */
  egress_rules: string | null;
  /** JSON of the service bindings granted at launch (`{ id, name }[]`); null when none. */
  bindings: string | null;
  image_version: string | null;
  /** How the backend isolates the shell, when it runs its class in more than one way. */
  isolation: string | null;
  ttl_seconds: number | null;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
  /** The template the shell was made from, as `name@version`; null when none. */
  template: string | null;
  /** Who created the shell (null when the history did not say, before 0011). */
  created_by_type: "user" | "agent" | null;
  created_by_id: string | null;
  /**
   * Who asked for the shell's deletion, set before its sandbox is destroyed: a delete cut by a
   * crash is finished by the next start's reconciliation. Null when none was asked for.
   */
  delete_requested_by: string | null;
}

export interface ShellLogTable {
  id: Generated<number>;
  org_id: string;
  shell_id: string;
  time: string;
  kind: "system" | "exec";
  message: string;
}

export interface ActivityTable {
  id: string;
  org_id: string;
  seq: number;
  /** JSON of the Actor. */
  actor: string;
  /** Denormalised actor id, for filtering. */
  actor_id: string;
  action: string;
  target_type: string | null;
  target_id: string | null;
  outcome: "success" | "failure" | "denied";
  /** JSON object. */
  details: string;
  time: string;
  prev_hash: string;
  hash: string;
}

export interface IdempotencyTable {
  org_id: string;
  key: string;
  /** SHA-256 of method, route and body: a reuse with a different request is refused. */
  request_hash: string;
  state: "pending" | "done";
  status_code: number | null;
  response: string | null;
  created_at: string;
  /** Boot id of the control-plane process running a pending request (null before 0020). */
  owner: string | null;
  /** Until when `owner` vouches for its pending request; it renews this while it runs. */
  lease_expires_at: string | null;
  /** The route's operation id (`createShell`), so a cut request can be resolved by its kind. */
  operation: string | null;
  /** Request id of the first request, for the body of an answer made for it after a crash. */
  request_id: string | null;
  /** JSON `{ shells: string[] }`: what the request made, each noted before it was made. */
  effects: string | null;
}

export interface AgentTable {
  id: string;
  org_id: string;
  name: string;
  role: "owner" | "admin" | "developer" | "viewer";
  created_at: string;
  disabled_at: string | null;
  /** Who created the agent (null when the history did not say). */
  created_by_type: "user" | "agent" | null;
  created_by_id: string | null;
}

export interface EntitlementTable {
  id: string;
  org_id: string;
  entitlement: string;
  principal_type: "user" | "agent";
  principal_id: string;
  granted_by: string;
  created_at: string;
}

export interface OrgPolicyTable {
  org_id: string;
  /** JSON of the OrgPolicy. */
  policy: string;
  updated_at: string;
}

export interface ApprovalTable {
  id: string;
  org_id: string;
  shell_id: string;
  action: ApprovalAction;
  /** JSON of the original request's options (snapshot names etc.), never secrets. */
  request: string;
  requested_by_type: "user" | "agent";
  requested_by_id: string;
  requested_key_id: string | null;
  state: "pending" | "granted" | "denied" | "expired" | "withdrawn";
  decided_by: string | null;
  reason: string | null;
  outcome: string | null;
  /** JSON of what the approver is shown beyond the action (a run's template and code hash). */
  context: string | null;
  created_at: string;
  expires_at: string;
  decided_at: string | null;
}

export interface SessionTable {
  /** SHA-256 of the session cookie's value; the value itself is never stored. */
  id_hash: string;
  org_id: string;
  user_id: string;
  csrf_token: string;
  /** JSON of the ID token claims the session was made from. */
  claims: string;
  created_at: string;
  expires_at: string;
  /**
   * The IdP's access and refresh tokens (JSON), AES-GCM encrypted under a key derived from the
   * session cookie: readable only while serving a request that carries that cookie.
   */
  idp_tokens: string | null;
  /** How the session re-checks the user's role with the IdP: `userinfo`, `refresh` or `none`. */
  recheck: Generated<"userinfo" | "refresh" | "none">;
  /** When the role was last re-checked. */
  checked_at: string | null;
}

export interface OidcLoginTable {
  /** SHA-256 of the login cookie bound to the browser that started the login. */
  id_hash: string;
  state: string;
  nonce: string;
  code_verifier: string;
  /** Same-origin path to land on after login. */
  return_to: string;
  expires_at: string;
}

export interface OidcAccountTable {
  user_id: string;
  org_id: string;
  /** Time of the freshest directory evidence applied to the user (role or offboarding). */
  synced_at: string;
  /** When the directory stopped mapping the user to a role (and the user was disabled for it). */
  offboarded_at: string | null;
}

export interface TermCredentialTable {
  id: string;
  org_id: string;
  shell_id: string;
  /** SHA-256 of the token; the token itself is never stored. */
  token_hash: string;
  created_by_type: "user" | "agent";
  created_by_id: string;
  /** The API key that minted it (null for a session or JWT): its revocation ends the credential. */
  created_by_key_id: string | null;
  created_at: string;
  expires_at: string;
  /** Set by the first attach: a credential works once. */
  used_at: string | null;
}

export interface PortUrlTable {
  id: string;
  org_id: string;
  shell_id: string;
  port: number;
  /** SHA-256 of the token; the token itself is never stored. */
  token_hash: string;
  created_by_type: "user" | "agent";
  created_by_id: string;
  /** The API key that made it (null for a session or JWT): its revocation ends the URL. */
  created_by_key_id: string | null;
  created_at: string;
  expires_at: string;
  /** When it was revoked (null while it stands): the token no longer opens anything. */
  revoked_at: string | null;
  revoked_by_type: "user" | "agent" | null;
  revoked_by_id: string | null;
}

/** Days runs keep what they kept, set for an org (`project_id` '') or one of its projects. */
export interface RunRetentionTable {
  org_id: string;
  /** The project's id; '' for the org's own setting. */
  project_id: string;
  days: number;
  updated_at: string;
  updated_by_type: "user" | "agent";
  updated_by_id: string;
}

export interface RunTable {
  id: string;
  org_id: string;
  shell_id: string;
  status: "pending_approval" | "running" | "succeeded" | "failed" | "cancelled";
  language: string;
  runtime: string;
  created_by_type: "user" | "agent";
  created_by_id: string;
  exit_code: number | null;
  kill_reason: string | null;
  /** JSON of the structured result, or null. */
  result: string | null;
  /** JSON array of `{ path, sizeBytes }`. */
  artifacts: string;
  /** JSON of the end of its output (RunOutput), written when it ends; null before. */
  output_tail: string | null;
  /** JSON of its /workspace changes (WorkspaceChanges), written when it ends; null before or when not taken. */
  workspace_changes: string | null;
  /** When its retention ran out and what it kept was removed; null while kept. */
  expired_at: string | null;
  /** The template the run was made from, as `name@version`; null when none. */
  template: string | null;
  /** JSON of the request of a run that waits for review (never secrets); null once it started. */
  pending_request: string | null;
  error: string | null;
  created_at: string;
  finished_at: string | null;
}

/** One reviewer's verdict on a finished run. */
export interface RunReviewTable {
  id: string;
  org_id: string;
  run_id: string;
  verdict: "approved" | "changes_requested" | "rejected";
  comment: string;
  /** The reviewing user's id. */
  reviewed_by: string;
  created_at: string;
}

export interface RunFrameTable {
  run_id: string;
  seq: number;
  type: "stdout" | "stderr" | "status" | "result" | "artifact" | "exit";
  /** JSON of the frame's data. */
  data: string;
  time: number;
}

/** A snapshot archive a backend wrote, with its size on the host's disk (for quotas). */
export interface SnapshotTable {
  org_id: string;
  shell_id: string;
  name: string;
  size_bytes: number;
  created_at: string;
}

/** A template: its name and scope; its definitions are its versions. */
export interface TemplateTable {
  id: string;
  org_id: string;
  /** The project it is scoped to; null: the whole org. */
  project_id: string | null;
  name: string;
  latest_version: number;
  created_by_type: "user" | "agent";
  created_by_id: string;
  created_at: string;
  updated_at: string;
}

/** One immutable version of a template. */
export interface TemplateVersionTable {
  template_id: string;
  version: number;
  /** JSON of the TemplateDefinition. */
  definition: string;
  /** SHA-256 of the definition's canonical JSON. */
  sha256: string;
  created_by_type: "user" | "agent";
  created_by_id: string;
  created_at: string;
}

/** A service binding: its rules in the clear, its secret only sealed. */
export interface BindingTable {
  id: string;
  org_id: string;
  name: string;
  upstream: string;
  /** The header template, with `{secret}` where the secret goes. */
  inject: string;
  /** JSON array of path globs. */
  paths: string;
  /** JSON array of methods. */
  methods: string;
  /** The secret as a sealed box (`iam/sealed-box.ts`). */
  secret: string;
  created_by_type: "user" | "agent";
  created_by_id: string;
  created_at: string;
  rotated_at: string;
}

export interface WebhookTable {
  id: string;
  org_id: string;
  url: string;
  description: string | null;
  /** JSON array of event types and groups. */
  events: string;
  /** The signing secret (`whsec_…`), sealed. */
  secret: string;
  /** The secret the last rotation replaced, sealed; it still signs until it expires. */
  previous_secret: string | null;
  previous_secret_expires_at: string | null;
  secret_rotated_at: string | null;
  created_by_type: "user" | "agent";
  created_by_id: string;
  created_at: string;
}

export interface WebhookDeliveryTable {
  id: string;
  org_id: string;
  webhook_id: string;
  /** The `webhook-id` header: shared by every try and every redelivery of one message. */
  message_id: string;
  event_type: string;
  activity_id: string;
  /** The exact JSON body that is signed and sent. */
  payload: string;
  state: "pending" | "delivered" | "failed";
  attempts: number;
  next_attempt_at: string | null;
  last_attempt_at: string | null;
  last_status: number | null;
  last_error: string | null;
  created_at: string;
  delivered_at: string | null;
  redelivery_of: string | null;
}

/**
 * A stretch of time one shell spent in one metered state, within one UTC hour and under one rate
 * card. Open (`ended_at_ms` null) while it lasts; at most one open row per shell. Counters are
 * what the backend reported for the stretch.
 */
export interface UsageIntervalTable {
  id: Generated<number>;
  org_id: string;
  project_id: string;
  shell_id: string;
  runtime: string;
  state: "provisioning" | "running" | "stopped" | "error";
  /** The shell's creator (user or agent id). */
  actor_id: string | null;
  /** The org's rate card in effect (`usage_rates.id`); null: the server's defaults. */
  rates_id: number | null;
  started_at_ms: number;
  ended_at_ms: number | null;
  /** While open: the last time the stretch was known to go on (a crash closes it here). */
  checkpoint_ms: number;
  cpu_usec: Generated<number>;
  /** Memory in use integrated over time, MiB × ms. */
  memory_mb_ms: Generated<number>;
  egress_bytes: Generated<number>;
  /** The backend's CPU counter as last read: its epoch and value (see `SandboxUsage`). */
  cpu_epoch: string | null;
  cpu_mark_usec: number | null;
}

/** An org's rate card from `effective_at_ms` on (JSON of micro-units per hour by class). */
export interface UsageRatesTable {
  id: Generated<number>;
  org_id: string;
  rates: string;
  effective_at_ms: number;
}

/** One cap on a project (see the contract's `Cap`); cost limits in micro-units. */
/** A project's egress rules (below the org's policy, above templates and shells). */
export interface ProjectEgressRulesTable {
  project_id: string;
  org_id: string;
  /** JSON of EgressRules. */
  rules: string;
  updated_at: string;
  updated_by_type: "user" | "agent";
  updated_by_id: string;
}

export interface ProjectCapTable {
  id: string;
  org_id: string;
  project_id: string;
  metric: "concurrent_shells" | "running_seconds" | "cost";
  period: "day" | "month" | null;
  runtime: string | null;
  limit_value: number;
  created_at: string;
  /** Where the cap stood in the list it was set with (the order `listCaps` answers in). */
  position: number | null;
}

/** A cap warning or stop already raised for one period, so each is raised once. */
export interface CapAlertTable {
  cap_id: string;
  period_start_ms: number;
  level: "warning" | "reached";
  created_at: string;
}
