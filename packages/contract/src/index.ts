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
export {
  BINDING_NAME_PATTERN,
  BINDING_SECRET_PLACEHOLDER,
  Binding,
  BindingCreate,
  BindingMethod,
  BindingRotate,
  bindingEnvName,
} from "./bindings.js";
export { ERROR_CODES, ERROR_STATUS, ErrorBody, ErrorCode } from "./errors.js";
export { buildOpenApiDocument, openApiPath } from "./openapi.js";
export { FileInfo, PathQuery, SeedFile, ShellPath, type FileContent } from "./files.js";
export { GitSource } from "./git-source.js";
export {
  ARTIFACT_PATTERN_LIMITS,
  Artifact,
  artifactPatternProblem,
  ExecFrame,
  InterpreterRequest,
  InterpreterResult,
  Run,
  RunCreate,
  RunFrame,
  RunOutput,
  RUN_OUTPUT_TAIL_BYTES,
  SkippedArtifact,
} from "./runs.js";
export { TERM_PROTOCOL, TERM_TOKEN_PROTOCOL_PREFIX, TermCredential } from "./terminals.js";
export { pageOf, type Page } from "./pages.js";
export {
  AGENT_TOOL_ARGUMENTS,
  Agent,
  AgentCreate,
  AgentInvokeRequest,
  AgentInvokeResult,
  AgentTool,
  ApiKey,
  ApiKeyCreate,
  ApiKeyCreated,
  Approval,
  ApprovalDecision,
  Entitlement,
  EntitlementGrant,
  EntitlementGrantCreate,
  GateMode,
  GatedAction,
  Member,
  MemberCreate,
  MemberUpdate,
  OrgPolicy,
  OrgEgressPolicy,
  OrgPolicyUpdate,
  Project,
  ProjectCreate,
  ROLE_SCOPES,
  Role,
  Scope,
  roleAtLeast,
} from "./iam.js";
export {
  PendingApproval,
  Principal,
  type AgentToolResults,
  ROUTES,
  RuntimeAvailability,
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
  ShellEgress,
  ShellEgressChange,
  EgressCidr,
  EgressHostRule,
  ShellStatus,
  Snapshot,
} from "./shells.js";
