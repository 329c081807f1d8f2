import type { Generated } from "kysely";
import type { GatedAction } from "@shells/contract";

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
  run_frames: RunFrameTable;
  oidc_logins: OidcLoginTable;
  oidc_accounts: OidcAccountTable;
  snapshots: SnapshotTable;
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
  /** JSON of the shell's own egress allowlist (ShellEgress); null: the org's policy alone. */
  egress: string | null;
  image_version: string | null;
  ttl_seconds: number | null;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
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
  action: GatedAction;
  /** JSON of the original request's options (snapshot names etc.), never secrets. */
  request: string;
  requested_by_type: "user" | "agent";
  requested_by_id: string;
  requested_key_id: string | null;
  state: "pending" | "granted" | "denied" | "expired";
  decided_by: string | null;
  reason: string | null;
  outcome: string | null;
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
}

export interface RunTable {
  id: string;
  org_id: string;
  shell_id: string;
  status: "running" | "succeeded" | "failed" | "cancelled";
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
  error: string | null;
  created_at: string;
  finished_at: string | null;
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
