import { z } from "zod";
import { ActivityEvent, ActivityQuery } from "./activity.js";
import {
  Agent,
  AgentCreate,
  AgentInvokeRequest,
  AgentInvokeResult,
  ApiKey,
  ApiKeyCreate,
  ApiKeyCreated,
  Approval,
  ApprovalDecision,
  EntitlementGrant,
  EntitlementGrantCreate,
  Member,
  MemberCreate,
  MemberUpdate,
  OrgPolicy,
  OrgPolicyUpdate,
  Project,
  ProjectCreate,
  Role,
  Scope,
} from "./iam.js";
import {
  ExecFrame,
  FileInfo,
  InterpreterRequest,
  InterpreterResult,
  PathQuery,
  Run,
  RunCreate,
  RunFrame,
  ShellPath,
  TermCredential,
} from "./live.js";
import { pageOf, type Page } from "./pages.js";
import {
  ActionRequest,
  ActionResult,
  Capability,
  ExecRequest,
  ExecResult,
  Language,
  RuntimeClass,
  Shell,
  ShellCreate,
  ShellStatus,
  Snapshot,
} from "./shells.js";

/** Availability of one runtime class on this server. */
export const RuntimeAvailability = z.strictObject({
  runtime: RuntimeClass,
  available: z.boolean(),
  /** Backend that serves the class (`container`, `simulator`, …), when one does. */
  backend: z.string().nullable(),
  /** What is missing when unavailable, or a note (the simulator says it runs no code). */
  reason: z.string().nullable(),
});
export type RuntimeAvailability = z.infer<typeof RuntimeAvailability>;

/** Who the caller is. */
export const Principal = z.strictObject({
  orgId: z.string(),
  actor: z.strictObject({ type: z.enum(["user", "agent"]), id: z.string() }),
  role: Role,
  /** The API key used, or null for a console session or a JWT. */
  keyId: z.string().nullable(),
  /** Effective scopes: the credential's scopes within the role's. */
  scopes: z.array(Scope),
  /** Entitlements held (e.g. `shells.agent.invoke`). */
  entitlements: z.array(z.string()),
  /** For console sessions: the token to send as `x-csrf-token` on mutating requests. */
  csrfToken: z.string().optional(),
});

/** What an action answers when the org's gate routes it to a named approver (HTTP 202). */
export const PendingApproval = z.strictObject({
  status: z.literal("pending_approval"),
  message: z.string(),
  approval: Approval,
});
export type PendingApproval = z.infer<typeof PendingApproval>;
export type Principal = z.infer<typeof Principal>;

const shellId = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "a shell id or name");

/** HTTP methods the API uses. */
export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** One route of the API: everything the server, the OpenAPI document and the tests need. */
export interface RouteSpec {
  method: HttpMethod;
  /** Path in Fastify syntax (`/api/v1/shells/:id`). */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** Whether a body may be omitted (treated as `{}`). */
  bodyOptional?: boolean;
  response: z.ZodType;
  successStatus: 200 | 201;
  /** `null` for public routes (health, OpenAPI, docs). */
  scope: Scope | null;
  /** Mutating routes that honour `Idempotency-Key`. */
  idempotent?: boolean;
  /** The body is raw bytes of one of these content types (not JSON), up to `maxBytes`. */
  rawBody?: { contentTypes: readonly string[]; maxBytes: number };
  /** The success response is raw bytes of this content type (not JSON). */
  rawResponse?: string;
  /** When set, `Accept: text/event-stream` answers a stream of these events instead of `response`. */
  eventStream?: z.ZodType;
  /** Minimum membership role, checked after the scope. */
  minRole?: Role;
  /**
   * A valid request within the caller's own org, for generated tests. Values `{shell}`, `{member}`,
   * `{agent}`, `{key}` (one of the caller's own keys), `{grant}`, `{approval}`, `{file}` (a file in
   * the `{shell}` fixture), `{run}` (a finished run that kept the artifact `out.txt`) stand for a fixture of that kind. A raw body is sent as its bytes.
   */
  example?: {
    params?: Record<string, string>;
    query?: Record<string, string>;
    body?: unknown;
    /** Scopes the example needs beyond the route's own (the agent gate's tool permission). */
    needs?: Scope[];
  };
}

/** Every route of the API, keyed by operation id. The server must implement each one. */
export const ROUTES = {
  health: {
    method: "GET",
    path: "/healthz",
    summary: "Liveness: the process answers.",
    tag: "health",
    response: z.strictObject({ status: z.literal("ok") }),
    successStatus: 200,
    scope: null,
  },
  ready: {
    method: "GET",
    path: "/readyz",
    summary: "Readiness: the store answers; which runtime classes this host can run.",
    tag: "health",
    response: z.strictObject({
      status: z.literal("ready"),
      runtimes: z.array(RuntimeAvailability),
    }),
    successStatus: 200,
    scope: null,
  },
  whoami: {
    method: "GET",
    path: "/api/v1/me",
    summary:
      "The authenticated principal: org, actor, role, key, effective scopes and entitlements.",
    tag: "identity",
    response: Principal,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  listRuntimes: {
    method: "GET",
    path: "/api/v1/runtimes",
    summary: "Runtime classes and whether this server can run each (and why not).",
    tag: "shells",
    response: z.strictObject({ items: z.array(RuntimeAvailability) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  listShells: {
    method: "GET",
    path: "/api/v1/shells",
    summary: "List the org's shells, newest first.",
    description: "Deleted shells are listed only when `status=deleted` is asked for.",
    tag: "shells",
    query: z.strictObject({
      status: ShellStatus.optional(),
      language: Language.optional(),
      runtime: RuntimeClass.optional(),
      limit: z.coerce.number().int().min(1).max(200).default(50),
      cursor: z.string().max(512).optional(),
    }),
    response: pageOf(Shell),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createShell: {
    method: "POST",
    path: "/api/v1/shells",
    summary: "Create a shell and start it.",
    description:
      "Answers once the shell is running (or in `error`). The runtime defaults to the org's isolation floor or `container`, whichever is stronger. Honours `Idempotency-Key`.",
    tag: "shells",
    body: ShellCreate,
    response: Shell,
    successStatus: 201,
    scope: "shells:instances:create",
    idempotent: true,
    example: { body: { language: "bash" } },
  },
  getShell: {
    method: "GET",
    path: "/api/v1/shells/:id",
    summary: "Get one shell by id or name.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    response: Shell,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" } },
  },
  deleteShell: {
    method: "DELETE",
    path: "/api/v1/shells/:id",
    summary: "Delete a shell: end its processes and reclaim every per-shell object.",
    description:
      "The record stays with status `deleted`. Goes through the org's approval gate: `confirm` must equal the shell's name or id under `confirm`; under `approvers` the answer is 202 with a pending approval. Honours `Idempotency-Key`.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({ confirm: z.string().max(256).optional() }),
    response: z.union([Shell, PendingApproval]),
    successStatus: 200,
    scope: "shells:instances:control",
    idempotent: true,
    example: { params: { id: "{shell}" } },
  },
  actOnShell: {
    method: "POST",
    path: "/api/v1/shells/:id/actions/:capability",
    summary:
      "Run a lifecycle capability: logs, restart, snapshot, restore, reinstall_os, stop, start, wipe_state.",
    description:
      "A capability not legal in the shell's current state answers 409 `invalid_state`. `stop`, `wipe_state` and `reinstall_os` go through the org's approval gate (see deleteShell).",
    tag: "shells",
    params: z.strictObject({ id: shellId, capability: Capability }),
    body: ActionRequest,
    bodyOptional: true,
    response: z.union([ActionResult, PendingApproval]),
    successStatus: 200,
    scope: "shells:instances:control",
    idempotent: true,
    example: { params: { id: "{shell}", capability: "snapshot" }, body: {} },
  },
  listSnapshots: {
    method: "GET",
    path: "/api/v1/shells/:id/snapshots",
    summary: "List a shell's restore points, newest first.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    response: z.strictObject({ items: z.array(Snapshot) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" } },
  },
  execInShell: {
    method: "POST",
    path: "/api/v1/shells/:id/exec",
    summary: "Run a command in a running shell and wait for it, or stream it.",
    description:
      "A non-zero exit code is a result (200), not an error. With `Accept: text/event-stream` the answer is a server-sent event stream of `stdout`/`stderr` frames as they happen, then one `exit` frame with the result (or an `error` event).",
    eventStream: ExecFrame,
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    body: ExecRequest,
    response: ExecResult,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, body: { command: ["echo", "hi"] } },
  },
  listFiles: {
    method: "GET",
    path: "/api/v1/shells/:id/files",
    summary: "List a directory inside a running shell.",
    description:
      "`path` is absolute or relative to /workspace; `..` is refused. Paths resolve inside the shell's own root.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.strictObject({ items: z.array(FileInfo) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  statFile: {
    method: "GET",
    path: "/api/v1/shells/:id/files/stat",
    summary: "Describe one file or directory inside a running shell.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: FileInfo,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  readFile: {
    method: "GET",
    path: "/api/v1/shells/:id/files/content",
    summary: "Download a file's bytes (up to 64 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.unknown(),
    rawResponse: "application/octet-stream",
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "{file}" } },
  },
  writeFile: {
    method: "PUT",
    path: "/api/v1/shells/:id/files/content",
    summary: "Upload a file's bytes (creates missing parent directories; up to 64 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({
      path: ShellPath,
      /** Octal permission bits, e.g. `755`. */
      mode: z
        .string()
        .regex(/^[0-7]{3,4}$/)
        .optional(),
    }),
    rawBody: { contentTypes: ["application/octet-stream"], maxBytes: 64 * 1024 * 1024 },
    body: z.unknown(),
    response: FileInfo,
    successStatus: 200,
    scope: "shells:instances:control",
    example: {
      params: { id: "{shell}" },
      query: { path: "/workspace/example.txt" },
      body: "hello",
    },
  },
  removeFile: {
    method: "DELETE",
    path: "/api/v1/shells/:id/files",
    summary: "Remove a file, or a directory (`recursive=true` when not empty).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({
      path: ShellPath,
      recursive: z.enum(["true", "false"]).default("false"),
    }),
    response: z.strictObject({ path: z.string(), removed: z.literal(true) }),
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "{file}" } },
  },
  downloadArchive: {
    method: "GET",
    path: "/api/v1/shells/:id/files/archive",
    summary: "Download a directory as a tar stream (up to 256 MiB).",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    response: z.unknown(),
    rawResponse: "application/x-tar",
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "/workspace" } },
  },
  uploadArchive: {
    method: "PUT",
    path: "/api/v1/shells/:id/files/archive",
    summary: "Unpack a tar archive into a directory (created if missing; up to 256 MiB).",
    description:
      "Entries with absolute paths, `..` segments, links that point outside the archive, or device files are refused (400 `unsafe_archive`) before anything is written.",
    tag: "files",
    params: z.strictObject({ id: shellId }),
    query: PathQuery,
    rawBody: { contentTypes: ["application/x-tar"], maxBytes: 256 * 1024 * 1024 },
    body: z.unknown(),
    response: z.strictObject({ path: z.string(), entries: z.int() }),
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, query: { path: "/workspace/unpacked" }, body: "" },
  },
  mintTermCredential: {
    method: "POST",
    path: "/api/v1/shells/:id/term",
    summary:
      "Mint a short-lived, single-use credential that attaches a terminal (WebSocket PTY) to the shell.",
    description:
      "The token is in this response only and is stored as a hash. It expires after the org's term credential TTL (default 5 minutes); the first attach consumes it and the connection ends when it expires. The mint is an activity event; the material never is.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    response: TermCredential,
    successStatus: 201,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" } },
  },
  runInterpreter: {
    method: "POST",
    path: "/api/v1/shells/:id/interpreter",
    summary: "Run one code-interpreter turn (python or node) in the shell's warm interpreter.",
    description:
      "Turns share one interpreter per shell and language (globals, imports, files), run in order, each with a wall clock (default 60 s). The last expression's value comes back as JSON (or its repr); an exception comes back as a structured error with its traceback. A crashed or timed-out interpreter is replaced by a fresh one on the next turn (`restarted: true`). Idle interpreters end after 10 minutes, any after 1 hour.",
    tag: "interpreter",
    params: z.strictObject({ id: shellId }),
    body: InterpreterRequest,
    response: InterpreterResult,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, body: { code: "1 + 1", language: "python" } },
  },
  createRun: {
    method: "POST",
    path: "/api/v1/runs",
    summary:
      "Start a one-shot run: an ephemeral shell runs code or a command, reports a result and artifacts, and is torn down.",
    description:
      "Answers at once with the run `running`; follow it with `/stream`, then read `/result`. Inside python and node, user code has a `shells` object: `shells.result(value)` and `shells.artifact(path)`; any language can write JSON to the file named by `$SHELLS_RESULT`.",
    tag: "runs",
    body: RunCreate,
    response: Run,
    successStatus: 201,
    scope: "shells:instances:create",
    idempotent: true,
    example: { body: { language: "bash", command: ["echo", "hi"] } },
  },
  listRuns: {
    method: "GET",
    path: "/api/v1/runs",
    summary: "The org's runs, newest first.",
    tag: "runs",
    query: z.strictObject({ limit: z.coerce.number().int().min(1).max(200).default(50) }),
    response: z.strictObject({ items: z.array(Run) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getRun: {
    method: "GET",
    path: "/api/v1/runs/:id",
    summary: "One run.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  streamRun: {
    method: "GET",
    path: "/api/v1/runs/:id/stream",
    summary: "A run's frames: stdout, stderr, status, result, artifact, exit.",
    description:
      "With `Accept: text/event-stream`: every frame so far, then live ones until the run ends; each event's id is its `seq`, and a `Last-Event-ID` header resumes after it. Without: the frames so far as JSON.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: z.strictObject({ items: z.array(RunFrame) }),
    eventStream: RunFrame,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunResult: {
    method: "GET",
    path: "/api/v1/runs/:id/result",
    summary:
      "A run's outcome: status, exit code, kill reason, the structured result and artifacts.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunActivity: {
    method: "GET",
    path: "/api/v1/runs/:id/activity",
    summary: "The activity events of a run and of its ephemeral shell, in order.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: z.strictObject({ items: z.array(ActivityEvent) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  readRunArtifact: {
    method: "GET",
    path: "/api/v1/runs/:id/artifacts/content",
    summary: "Download one of a run's artifacts.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({ path: z.string().min(1).max(4096) }),
    response: z.unknown(),
    rawResponse: "application/octet-stream",
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" }, query: { path: "out.txt" } },
  },
  deleteRun: {
    method: "DELETE",
    path: "/api/v1/runs/:id",
    summary:
      "Tear a run down: cancel it if still running, reclaim its shell and delete its artifacts. The record stays.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{run}" } },
  },
  listActivity: {
    method: "GET",
    path: "/api/v1/activity",
    summary: "The org's activity history (hash-chained, append-only).",
    tag: "activity",
    query: ActivityQuery,
    response: pageOf(ActivityEvent),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getPolicy: {
    method: "GET",
    path: "/api/v1/org/policy",
    summary:
      "The org's policy: isolation floor, regions, credential TTL, default network, approval gates.",
    tag: "org",
    response: OrgPolicy,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  updatePolicy: {
    method: "PATCH",
    path: "/api/v1/org/policy",
    summary: "Change the org's policy (admins). Fields left out keep their value.",
    tag: "org",
    body: OrgPolicyUpdate,
    response: OrgPolicy,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { termCredentialTtlSeconds: 600 } },
  },
  listProjects: {
    method: "GET",
    path: "/api/v1/projects",
    summary: "The org's projects.",
    tag: "org",
    response: z.strictObject({ items: z.array(Project) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createProject: {
    method: "POST",
    path: "/api/v1/projects",
    summary: "Create a project (admins).",
    tag: "org",
    body: ProjectCreate,
    response: Project,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { name: "research" } },
  },
  listMembers: {
    method: "GET",
    path: "/api/v1/members",
    summary: "The org's members and their roles.",
    tag: "members",
    response: z.strictObject({ items: z.array(Member) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createMember: {
    method: "POST",
    path: "/api/v1/members",
    summary: "Add a member with a role (admins; only owners add owners).",
    tag: "members",
    body: MemberCreate,
    response: Member,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { email: "new.member@example.com", role: "developer" } },
  },
  updateMember: {
    method: "PATCH",
    path: "/api/v1/members/:id",
    summary: "Change a member's role or disable them (admins; only owners touch owners).",
    tag: "members",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: MemberUpdate,
    response: Member,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{member}" }, body: { role: "viewer" } },
  },
  removeMember: {
    method: "DELETE",
    path: "/api/v1/members/:id",
    summary: "Remove a member; their keys are revoked (admins).",
    tag: "members",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: Member,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{member}" } },
  },
  listAgents: {
    method: "GET",
    path: "/api/v1/agents",
    summary: "The org's agents (non-human principals).",
    tag: "agents",
    response: z.strictObject({ items: z.array(Agent) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createAgent: {
    method: "POST",
    path: "/api/v1/agents",
    summary:
      "Create an agent (admins). Issue it a key with createKey; grant it the entitlement to use the gate.",
    tag: "agents",
    body: AgentCreate,
    response: Agent,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { body: { name: "ci-bot" } },
  },
  deleteAgent: {
    method: "DELETE",
    path: "/api/v1/agents/:id",
    summary: "Disable an agent; its keys are revoked and its entitlements withdrawn (admins).",
    tag: "agents",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: Agent,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{agent}" } },
  },
  listKeys: {
    method: "GET",
    path: "/api/v1/keys",
    summary: "API keys: admins see the org's, others their own. Secrets are never listed.",
    tag: "keys",
    response: z.strictObject({ items: z.array(ApiKey) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  createKey: {
    method: "POST",
    path: "/api/v1/keys",
    summary:
      "Issue an API key. The secret is in this response only. Scopes cannot exceed the holder's role.",
    tag: "keys",
    body: ApiKeyCreate,
    response: ApiKeyCreated,
    successStatus: 201,
    scope: "shells:instances:control",
    example: { body: { name: "laptop", scopes: ["shells:instances:control"] } },
  },
  revokeKey: {
    method: "DELETE",
    path: "/api/v1/keys/:id",
    summary: "Revoke an API key (your own, or any as an admin).",
    tag: "keys",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: ApiKey,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{key}" } },
  },
  listEntitlements: {
    method: "GET",
    path: "/api/v1/entitlements",
    summary: "Who holds which entitlement.",
    tag: "agents",
    response: z.strictObject({ items: z.array(EntitlementGrant) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  grantEntitlement: {
    method: "POST",
    path: "/api/v1/entitlements",
    summary: "Grant an entitlement (e.g. `shells.agent.invoke`) to an agent or user (admins).",
    tag: "agents",
    body: EntitlementGrantCreate,
    response: EntitlementGrant,
    successStatus: 201,
    scope: "shells:instances:control",
    minRole: "admin",
    example: {
      body: { entitlement: "shells.agent.invoke", principal: { type: "agent", id: "{agent}" } },
    },
  },
  revokeEntitlement: {
    method: "DELETE",
    path: "/api/v1/entitlements/:id",
    summary: "Withdraw an entitlement grant (admins).",
    tag: "agents",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: EntitlementGrant,
    successStatus: 200,
    scope: "shells:instances:control",
    minRole: "admin",
    example: { params: { id: "{grant}" } },
  },
  listApprovals: {
    method: "GET",
    path: "/api/v1/approvals",
    summary: "Approval requests, newest first.",
    tag: "approvals",
    query: z.strictObject({
      state: z.enum(["pending", "granted", "denied", "expired"]).optional(),
    }),
    response: z.strictObject({ items: z.array(Approval) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getApproval: {
    method: "GET",
    path: "/api/v1/approvals/:id",
    summary: "One approval request.",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{approval}" } },
  },
  grantApproval: {
    method: "POST",
    path: "/api/v1/approvals/:id/grant",
    summary: "Grant a pending approval (listed approvers only): the action runs as its requester.",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: ApprovalDecision,
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{approval}" }, body: { reason: "planned maintenance" } },
  },
  denyApproval: {
    method: "POST",
    path: "/api/v1/approvals/:id/deny",
    summary: "Deny a pending approval (listed approvers only).",
    tag: "approvals",
    params: z.strictObject({ id: z.string().min(1).max(64) }),
    body: ApprovalDecision,
    response: Approval,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{approval}" }, body: { reason: "not during the demo" } },
  },
  agentInvoke: {
    method: "POST",
    path: "/api/agent/invoke",
    summary: "The agent gate: run a tool as an agent.",
    description:
      "Needs the `shells.agent.invoke` entitlement AND the permission of the underlying operation (entitlement plus permission, never either alone). Runs the same service code as the REST routes; every decision is an activity event.",
    tag: "agents",
    body: AgentInvokeRequest,
    response: AgentInvokeResult,
    successStatus: 200,
    scope: "shells:agent:invoke",
    example: { body: { tool: "shells_list", arguments: {} }, needs: ["shells:instances:read"] },
  },
} as const satisfies Record<string, RouteSpec>;

/** A file's content as `shells_files` `read` answers it. */
export interface FileContent {
  path: string;
  sizeBytes: number;
  encoding: "utf8" | "base64";
  content: string;
}

/** What each agent tool answers through the gate: the same shape as the REST route it mirrors. */
export interface AgentToolResults {
  /** One page of shells, as `GET /api/v1/shells`. */
  shells_list: Page<Shell>;
  shells_create: Shell;
  /** `delete` answers the deleted shell; a capability parked for an approver, a pending approval. */
  shells_action: ActionResult | Shell | PendingApproval;
  shells_exec: ExecResult;
  shells_term: TermCredential;
  shells_interpreter: InterpreterResult;
  /** The run once it ended (or as it stands after 15 minutes). */
  shells_run: Run;
  /** `list`: the entries; `read`: the content; `write`: the written file. */
  shells_files: { items: FileInfo[] } | FileContent | FileInfo;
}

/** Operation ids of the API. */
export type OperationId = keyof typeof ROUTES;

type Route<K extends OperationId> = (typeof ROUTES)[K];
type Infer<S> = S extends z.ZodType ? z.output<S> : undefined;
/** The parsed (output) type of a route's params, query or body. */
export type RouteParams<K extends OperationId> =
  Route<K> extends { params: infer P } ? Infer<P> : Record<string, never>;
export type RouteQuery<K extends OperationId> =
  Route<K> extends { query: infer Q } ? Infer<Q> : Record<string, never>;
export type RouteBody<K extends OperationId> =
  Route<K> extends { body: infer B } ? Infer<B> : undefined;
export type RouteResponse<K extends OperationId> = z.output<Route<K>["response"]>;
