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
  type AgentInvokeResult,
  type AgentToolArguments,
  type AgentToolResults,
  type DeleteOptions,
  type ForkOptions,
  type IdempotentRequestOptions,
  type InterpreterRequest,
  type ListShellsQuery,
  type RequestOptions,
  type WaitUntilRunningOptions,
  type ShellsClientOptions,
} from "./shells-client.js";
// The namespace classes are exported as types only: the client builds them (`shells.members`, …).
export type {
  AgentsApi,
  ApprovalsApi,
  EntitlementsApi,
  KeysApi,
  MembersApi,
  PolicyApi,
  ProjectsApi,
  AgentCreate,
  ApiKeyCreate,
  ApiKeyCreated,
  ApprovalDecision,
  ApprovalState,
  EntitlementGrantCreate,
  ListApprovalsQuery,
  MemberCreate,
  MemberUpdate,
  OrgPolicyUpdate,
  PrincipalRef,
  ProjectCreate,
} from "./iam-resources.js";
export type { BindingCreate, BindingRotate, BindingsApi } from "./bindings-api.js";
export type {
  TemplateCreate,
  TemplateImageBuildOptions,
  TemplateVersionCreate,
  TemplatesApi,
} from "./templates-api.js";
// The namespace classes and handles are exported as types only: the client builds them.
export type {
  DirectoryUploaded,
  FileRemoveOptions,
  FileRemoved,
  FileWriteOptions,
  FilesApi,
} from "./files-api.js";
export type { ListRunsQuery, RunHandle, RunsApi } from "./runs-api.js";
export type { ListWebhookDeliveriesQuery, WebhookCreate, WebhooksApi } from "./webhooks-api.js";
export { verifyWebhook, WebhookVerificationError, type WebhookHeaders } from "./verify-webhook.js";
export type { CapsApi, RateCardUpdate, UsageApi, UsageReportQuery } from "./usage-api.js";
export type { AuditApi } from "./audit-api.js";
export type {
  TerminalAttachOptions,
  TerminalClose,
  TerminalConnection,
  TerminalCredential,
  TerminalSignal,
} from "./terminal-connection.js";
export { isPendingApproval, type ActionOutcome, type GatedCapability } from "./pending-approval.js";
export { PaginatedList, type PageFetcher } from "./paginated-list.js";
export {
  AuthenticationError,
  ConfigurationError,
  ConfirmationRequiredError,
  ConflictError,
  ConnectionError,
  GoneError,
  NotFoundError,
  PermissionDeniedError,
  ProvisioningError,
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
  Cap,
  CapStatus,
  Artifact,
  Agent,
  Binding,
  BindingMethod,
  AgentTool,
  ApiKey,
  Approval,
  Capability,
  ChainVerification,
  Checkpoint,
  CheckpointConsistency,
  CheckpointKey,
  EventProof,
  EvidenceBundle,
  Entitlement,
  EntitlementGrant,
  EgressRules,
  ErrorBody,
  ErrorCode,
  ExecFrame,
  ExecRequest,
  ExecResult,
  FileInfo,
  GateMode,
  GatedAction,
  GovernanceReport,
  InterpreterResult,
  KillReason,
  Language,
  LogEntry,
  Member,
  NetworkMode,
  OrgPolicy,
  Page,
  PendingApproval,
  Principal,
  RateCard,
  Project,
  ProjectEgress,
  ResolvedResources,
  Resources,
  Role,
  Run,
  RunCreate,
  RunFrame,
  RuntimeAvailability,
  RuntimeClass,
  Scope,
  Shell,
  ShellCreate,
  ShellForkResult,
  ShellEgress,
  ShellEgressChange,
  ShellStatus,
  SeedFile,
  PauseInfo,
  PortUrl,
  ExposedPort,
  ForkFailure,
  Snapshot,
  Target,
  TermCredential,
  Webhook,
  WebhookCreated,
  WebhookDelivery,
  WebhookEventFilter,
  WebhookEventType,
  WebhookPayload,
  UsageDimension,
  UsageReport,
  UsageRow,
  TreeLeaves,
  WorkspaceChange,
  WorkspaceChanges,
  WorkspaceDiff,
  WorkspaceFileDiff,
  RunRetention,
} from "@shells/contract";
