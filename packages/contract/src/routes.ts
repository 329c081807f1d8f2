import { z } from "zod";
import { ActivityEvent, ActivityQuery } from "./activity.js";
import { pageOf } from "./pages.js";
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

/** Product scopes an API key or token can carry (seed 001, exactly). */
export const Scope = z.enum([
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
]);
export type Scope = z.infer<typeof Scope>;

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
  keyId: z.string().nullable(),
  scopes: z.array(Scope),
});
export type Principal = z.infer<typeof Principal>;

const shellId = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "a shell id or name");

/** HTTP methods the API uses. */
export type HttpMethod = "GET" | "POST" | "DELETE";

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
    summary: "The authenticated principal: org, actor, key and scopes.",
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
    description: "Answers once the shell is running (or in `error`). Honours `Idempotency-Key`.",
    tag: "shells",
    body: ShellCreate,
    response: Shell,
    successStatus: 201,
    scope: "shells:instances:create",
    idempotent: true,
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
  },
  deleteShell: {
    method: "DELETE",
    path: "/api/v1/shells/:id",
    summary: "Delete a shell: end its processes and reclaim every per-shell object.",
    description: "The record stays with status `deleted`. Honours `Idempotency-Key`.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({ confirm: z.string().max(256).optional() }),
    response: Shell,
    successStatus: 200,
    scope: "shells:instances:control",
    idempotent: true,
  },
  actOnShell: {
    method: "POST",
    path: "/api/v1/shells/:id/actions/:capability",
    summary:
      "Run a lifecycle capability: logs, restart, snapshot, restore, reinstall_os, stop, start, wipe_state.",
    description: "A capability not legal in the shell's current state answers 409 `invalid_state`.",
    tag: "shells",
    params: z.strictObject({ id: shellId, capability: Capability }),
    body: ActionRequest,
    bodyOptional: true,
    response: ActionResult,
    successStatus: 200,
    scope: "shells:instances:control",
    idempotent: true,
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
  },
  execInShell: {
    method: "POST",
    path: "/api/v1/shells/:id/exec",
    summary: "Run a command in a running shell and wait for it.",
    description: "A non-zero exit code is a result (200), not an error.",
    tag: "shells",
    params: z.strictObject({ id: shellId }),
    body: ExecRequest,
    response: ExecResult,
    successStatus: 200,
    scope: "shells:instances:control",
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
} as const satisfies Record<string, RouteSpec>;

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
