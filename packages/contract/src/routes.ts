import type { z } from "zod";
import { agentRoutes } from "./routes/agent-routes.js";
import { approvalRoutes } from "./routes/approval-routes.js";
import { bindingRoutes } from "./routes/bindings-routes.js";
import { auditRoutes } from "./routes/audit-routes.js";
import { fileRoutes } from "./routes/file-routes.js";
import { iamRoutes } from "./routes/iam-routes.js";
import { orgRoutes } from "./routes/org-routes.js";
import type { RouteSpec } from "./routes/route-spec.js";
import { runRoutes } from "./routes/run-routes.js";
import { shellRoutes } from "./routes/shell-routes.js";
import { systemRoutes } from "./routes/system-routes.js";
import { templateRoutes } from "./routes/templates-routes.js";
import { terminalRoutes } from "./routes/terminal-routes.js";
import { webhooksRoutes } from "./routes/webhooks-routes.js";
import { usageRoutes } from "./routes/usage-routes.js";

export type { AgentToolResults } from "./routes/agent-routes.js";
export { PendingApproval, type HttpMethod, type RouteSpec } from "./routes/route-spec.js";
export { Principal, RuntimeAvailability } from "./routes/system-routes.js";

/**
 * Every route of the API, keyed by operation id, composed from one table per area. The server
 * must implement each one. The order of the areas is the order of the OpenAPI document.
 */
export const ROUTES = {
  ...systemRoutes,
  ...shellRoutes,
  ...fileRoutes,
  ...terminalRoutes,
  ...runRoutes,
  ...orgRoutes,
  ...bindingRoutes,
  ...templateRoutes,
  ...auditRoutes,
  ...iamRoutes,
  ...approvalRoutes,
  ...webhooksRoutes,
  ...agentRoutes,
  ...usageRoutes,
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
