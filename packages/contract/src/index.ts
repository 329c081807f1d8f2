/**
 * The Shells wire contract: zod schemas of every request and response, the error registry and the
 * route table the server, the SDK, the OpenAPI document and the tests are generated from.
 */
export {
  ActivityEvent,
  ActivityQuery,
  Actor,
  GENESIS_HASH,
  Target,
  activityEventHash,
  canonicalJson,
  verifyActivityChain,
  type ChainVerification,
  type HashedFields,
} from "./activity.js";
export { ERROR_CODES, ERROR_STATUS, ErrorBody, ErrorCode } from "./errors.js";
export { buildOpenApiDocument, openApiPath } from "./openapi.js";
export { pageOf, type Page } from "./pages.js";
export {
  Principal,
  ROUTES,
  RuntimeAvailability,
  Scope,
  type HttpMethod,
  type OperationId,
  type RouteBody,
  type RouteParams,
  type RouteQuery,
  type RouteResponse,
  type RouteSpec,
} from "./routes.js";
export {
  ActionRequest,
  ActionResult,
  CAPABILITY_LEGAL_IN,
  Capability,
  EnvMap,
  ExecRequest,
  ExecResult,
  KillReason,
  Language,
  LogEntry,
  NetworkMode,
  ResolvedResources,
  Resources,
  RuntimeClass,
  Shell,
  ShellCreate,
  ShellStatus,
  Snapshot,
} from "./shells.js";
