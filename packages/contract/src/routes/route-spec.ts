import { z } from "zod";
import { Approval, Role, Scope } from "../iam.js";

/** What an action answers when the org's gate routes it to a named approver (HTTP 202). */
export const PendingApproval = z.strictObject({
  status: z.literal("pending_approval"),
  message: z.string(),
  approval: Approval,
});
export type PendingApproval = z.infer<typeof PendingApproval>;

/** A shell or run id (or a shell's name) in a path. */
export const shellId = z
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
  /**
   * Another representation of the same answer, chosen by `Accept: <contentType>` or the query's
   * `format` (a usage report as CSV).
   */
  alternateResponse?: { contentType: string; description: string };
  /** When set, `Accept: text/event-stream` answers a stream of these events instead of `response`. */
  eventStream?: z.ZodType;
  /** Minimum membership role, checked after the scope. */
  minRole?: Role;
  /**
   * A valid request within the caller's own org, for generated tests. Values `{shell}`, `{member}`,
   * `{agent}`, `{key}` (one of the caller's own keys), `{grant}`, `{boundShell}` (a shell granted the `{binding}` fixture at launch), `{approval}`, `{ownApproval}` (one the caller requested), `{file}` (a file in
   * the `{shell}` fixture), `{binding}` (a service binding's name), `{template}` (a template with an image recipe), `{run}` (a finished run that kept
   * the artifact `out.txt`), `{reviewableRun}` (such a run, with the caller a listed approver), `{event}` (an activity event), `{checkpoint}` (a signed checkpoint)
   * stand for a fixture of that kind. A raw body is sent as its bytes.
   */
  example?: {
    params?: Record<string, string>;
    query?: Record<string, string>;
    body?: unknown;
    /** Scopes the example needs beyond the route's own (the agent gate's tool permission). */
    needs?: Scope[];
  };
}
