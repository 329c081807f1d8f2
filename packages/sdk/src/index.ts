/**
 * `@l1fe/shells`: the typed client of the Shells control plane. This file is the package's contract:
 * what it exports is public, everything else is internal.
 *
 * ```ts
 * import ShellsClient from "@l1fe/shells";
 * const shells = new ShellsClient({ baseUrl, token: process.env.SHELLS_API_TOKEN });
 * ```
 */
import { ShellsClient } from "./shells-client.js";

export default ShellsClient;
export {
  ShellsClient,
  type ActionOptions,
  type ActivityListQuery,
  type DeleteOptions,
  type IdempotentRequestOptions,
  type ListShellsQuery,
  type RequestOptions,
  type ShellsClientOptions,
} from "./shells-client.js";
export { PaginatedList, type PageFetcher } from "./paginated-list.js";
export {
  AuthenticationError,
  ConfigurationError,
  ConflictError,
  ConnectionError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ServerError,
  ShellsError,
  ValidationError,
  type ClientErrorCode,
  type ShellsErrorCode,
  type ShellsErrorFields,
} from "./errors.js";
export type {
  ActionRequest,
  ActionResult,
  ActivityEvent,
  Actor,
  Capability,
  ChainVerification,
  ErrorBody,
  ErrorCode,
  ExecRequest,
  ExecResult,
  KillReason,
  Language,
  LogEntry,
  NetworkMode,
  Page,
  Principal,
  ResolvedResources,
  Resources,
  RuntimeAvailability,
  RuntimeClass,
  Scope,
  Shell,
  ShellCreate,
  ShellStatus,
  Snapshot,
  Target,
} from "@shells/contract";
