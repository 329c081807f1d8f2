import { z } from "zod";

/**
 * Every error the API can answer with. The code is stable and part of the contract: clients branch
 * on it, never on the message.
 */
export const ErrorCode = {
  /** The request body is not valid JSON, or not an object where one is required. */
  malformedRequest: "malformed_request",
  /** The request parsed but failed schema validation (wrong type, unknown field, out of range). */
  validationFailed: "validation_failed",
  /** The body is larger than the route accepts. */
  payloadTooLarge: "payload_too_large",
  /** The Content-Type is not one the route accepts. */
  unsupportedMediaType: "unsupported_media_type",
  /** No route matches the method and path. */
  routeNotFound: "route_not_found",
  /** No credential was presented, or it is unknown, malformed, revoked or expired. */
  unauthenticated: "unauthenticated",
  /** The caller is authenticated but lacks the scope or role the operation needs. */
  forbidden: "forbidden",
  /** The shell does not exist or belongs to another org (the two are indistinguishable). */
  shellNotFound: "shell_not_found",
  /** The named snapshot does not exist for this shell. */
  snapshotNotFound: "snapshot_not_found",
  /** A member, agent, key, entitlement grant or approval that does not exist in the caller's org. */
  notFound: "not_found",
  /** The action is gated by typed confirmation: send `confirm` equal to the shell's name or id. */
  confirmationRequired: "confirmation_required",
  /** The agent gate needs the `shells.agent.invoke` entitlement, which the caller does not hold. */
  entitlementRequired: "entitlement_required",
  /** The requested runtime class is below the org's isolation floor. */
  belowIsolationFloor: "below_isolation_floor",
  /** The requested region is not among the org's allowed regions. */
  regionNotAllowed: "region_not_allowed",
  /** The requested region is not one this server runs shells in (`details.offered` lists those). */
  regionUnavailable: "region_unavailable",
  /**
   * No slot of the runtime class is free for the caller on this server: the rest are in use or
   * reserved for other orgs or projects (`details` counts them).
   */
  capacityExhausted: "capacity_exhausted",
  /** The approval was already decided or has expired. */
  approvalClosed: "approval_closed",
  separationOfDuties: "separation_of_duties",
  /** The change would leave the org without an owner. */
  lastOwner: "last_owner",
  /** A cookie-authenticated request without the session's CSRF token. */
  csrfFailed: "csrf_failed",
  /** The activity event does not exist in the caller's org. */
  eventNotFound: "event_not_found",
  /** The checkpoint does not exist in the caller's org. */
  checkpointNotFound: "checkpoint_not_found",
  /** The checkpoint does not cover what was asked: an event newer than it, or a larger tree than it signs. */
  notInCheckpoint: "not_in_checkpoint",
  /**
   * The org's stored activity tree lacks a subtree it must hold: the store was altered outside the
   * server. Verify the history against a checkpoint saved elsewhere (`shells audit verify --checkpoint`).
   */
  auditTreeDamaged: "audit_tree_damaged",
  /**
   * A run's artifacts, workspace changes or diff were removed when their retention ran out
   * (`details.expiredAt`); the run's record and its history stay.
   */
  artifactExpired: "artifact_expired",
  /** The file or directory does not exist inside the shell. */
  fileNotFound: "file_not_found",
  /** The path is not an absolute, normalised path inside the shell (no `..`, no NUL). */
  invalidPath: "invalid_path",
  /** A directory where a file is needed, a file where a directory is, or a non-empty directory. */
  wrongFileType: "wrong_file_type",
  /** The file or archive is larger than the limit in `details.limitBytes`. */
  fileTooLarge: "file_too_large",
  /** An uploaded archive is not valid tar, or holds an entry that could land outside its target. */
  unsafeArchive: "unsafe_archive",
  /** The project does not exist in the caller's org. */
  projectNotFound: "project_not_found",
  /** The service binding does not exist in the caller's org (another org's is not found either). */
  bindingNotFound: "binding_not_found",
  /** A binding name that is not lowercase letters, digits and `_`, starting with a letter (≤ 63). */
  bindingNameInvalid: "binding_name_invalid",
  /** A binding upstream that is not a URL with a host, or carries credentials, a query or a fragment. */
  bindingUpstreamInvalid: "binding_upstream_invalid",
  /** A binding upstream that is not `https://` (plain http only where the server allows it for tests). */
  bindingUpstreamNotHttps: "binding_upstream_not_https",
  /** `{secret}` in a binding's upstream URL: the secret goes in one header only. */
  bindingSecretInUrl: "binding_secret_in_url",
  /** A binding's header template is not `Name: value with {secret}`, has CR/LF or control characters, or names a header that frames the request. */
  bindingHeaderInvalid: "binding_header_invalid",
  /** A binding path glob that is not an absolute path, or has more wildcards than allowed. */
  bindingPathInvalid: "binding_path_invalid",
  /** A binding secret that is not 8 or more printable ASCII characters, or that appears in a field shown in the clear. */
  bindingSecretInvalid: "binding_secret_invalid",
  /** The shell's runtime cannot route to the egress proxy, which service bindings need. */
  bindingsUnavailable: "bindings_unavailable",
  /** A git source whose repo is not an `https://` or `http://` URL with a host, or carries credentials, a query or a fragment. */
  gitRepoInvalid: "git_repo_invalid",
  /** The org's egress rules do not let the control plane reach the git source's host. */
  gitRepoNotAllowed: "git_repo_not_allowed",
  /** The git source's repo could not be reached or read (no such host or repo, refused, timed out, authentication failed). */
  gitRepoUnreachable: "git_repo_unreachable",
  /** The git source's ref (branch, tag or commit) is not in the repo. */
  gitRefNotFound: "git_ref_not_found",
  /** The git source is bigger than the server clones (bytes fetched or checked out, or files). */
  gitRepoTooLarge: "git_repo_too_large",
  /** The git source's subpath or entrypoint is not in the cloned commit. */
  gitPathNotFound: "git_path_not_found",
  /** The binding named by a git source does not cover the repo (another host, path or method). */
  gitBindingMismatch: "git_binding_mismatch",
  /** No template of that name (or version) in the caller's org and project. */
  templateNotFound: "template_not_found",
  /** A template definition that cannot work (a lock on a field it leaves open, a path outside /workspace, a duplicate file). */
  templateInvalid: "template_invalid",
  /** The request loosens a field its template locks; `details.field` names it. */
  templateLocked: "template_locked",
  /** A template marked `reviewBeforeRun`, but the org lists no approvers to review its runs. */
  reviewUnavailable: "review_unavailable",
  /** The template asks review of binding grants, which this request cannot wait for. */
  reviewRequired: "review_required",
  /** The capability is not legal in the shell's current lifecycle state. */
  invalidState: "invalid_state",
  /** The shell is paused: its processes are frozen and it runs nothing until `resume`. */
  shellPaused: "shell_paused",
  /** A resource limit above the org's maximum or the host's capacity; `details` names the field, the asked value and the maximum. */
  limitExceeded: "limit_exceeded",
  /** A quota or a project cap is used up; `details` give the quota (or cap), its current use and the limit. */
  quotaExceeded: "quota_exceeded",
  /** A shell with this name already exists in the project. */
  nameTaken: "name_taken",
  /** The requested runtime class cannot run on this host; `details.missing` says what is missing. */
  runtimeUnavailable: "runtime_unavailable",
  /** The requested network mode is not offered yet by this server. */
  networkModeUnavailable: "network_mode_unavailable",
  /** The shell's runtime cannot run this command (a wasm shell runs only its interpreter); `details.accepted` says what it runs. */
  unsupportedCommand: "unsupported_command",
  /** A webhook URL points at a private, loopback or link-local address the org's policy does not allow (`webhooks.allowCidrs`). */
  destinationNotAllowed: "destination_not_allowed",
  /** The Idempotency-Key was reused with a different request. */
  idempotencyKeyReused: "idempotency_key_reused",
  /** A request with this Idempotency-Key is still being processed; retry shortly. */
  requestInProgress: "request_in_progress",
  /**
   * The first request with this Idempotency-Key was cut off by a restart of the control plane after
   * it made something (`details.shells` names what exists); its own answer is not knowable.
   */
  requestInterrupted: "request_interrupted",
  /** The pagination cursor is not one this server issued. */
  invalidCursor: "invalid_cursor",
  /** Too many requests; retry after the interval in `details.retryAfterMs`. */
  rateLimited: "rate_limited",
  /** The sandbox backend failed; the shell may be in state `error`. */
  backendFailed: "backend_failed",
  /** Nothing listens on the exposed port inside the shell (start the server, then retry). */
  portNotListening: "port_not_listening",
  /** The server is not ready (starting, or a dependency is down). */
  notReady: "not_ready",
  /**
   * This host cannot take the shell now: creates starting at once are at the host's limit and none
   * finished within the queue's wait (`details.reason` `provisioning`), or its shells' memory is
   * promised (`memory`). Nothing of the shell was made; retry after `Retry-After` seconds.
   */
  capacityUnavailable: "capacity_unavailable",
  /**
   * The server is shutting down and takes no new requests; retry after `Retry-After` seconds (a
   * restarted server, or another replica, answers it).
   */
  shuttingDown: "shutting_down",
  /** An unexpected server fault. Reported with a request id; never caused by input. */
  internal: "internal",
} as const;

/** A stable error code. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The HTTP status of each error code. Exhaustive: a new code without a status does not compile. */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  malformed_request: 400,
  validation_failed: 400,
  payload_too_large: 413,
  unsupported_media_type: 415,
  route_not_found: 404,
  unauthenticated: 401,
  forbidden: 403,
  shell_not_found: 404,
  snapshot_not_found: 404,
  project_not_found: 404,
  not_found: 404,
  event_not_found: 404,
  checkpoint_not_found: 404,
  not_in_checkpoint: 409,
  audit_tree_damaged: 500,
  artifact_expired: 410,
  file_not_found: 404,
  invalid_path: 400,
  wrong_file_type: 409,
  file_too_large: 413,
  unsafe_archive: 400,
  confirmation_required: 428,
  entitlement_required: 403,
  below_isolation_floor: 422,
  region_not_allowed: 422,
  region_unavailable: 422,
  capacity_exhausted: 409,
  approval_closed: 409,
  separation_of_duties: 403,
  last_owner: 409,
  csrf_failed: 403,
  binding_not_found: 404,
  binding_name_invalid: 400,
  binding_upstream_invalid: 400,
  binding_upstream_not_https: 400,
  binding_secret_in_url: 400,
  binding_header_invalid: 400,
  binding_path_invalid: 400,
  binding_secret_invalid: 400,
  bindings_unavailable: 422,
  git_repo_invalid: 400,
  git_repo_not_allowed: 403,
  git_repo_unreachable: 422,
  git_ref_not_found: 422,
  git_repo_too_large: 413,
  git_path_not_found: 422,
  git_binding_mismatch: 403,
  template_not_found: 404,
  template_invalid: 400,
  template_locked: 422,
  review_unavailable: 422,
  review_required: 422,
  invalid_state: 409,
  shell_paused: 409,
  limit_exceeded: 422,
  quota_exceeded: 409,
  name_taken: 409,
  runtime_unavailable: 422,
  network_mode_unavailable: 422,
  unsupported_command: 422,
  destination_not_allowed: 422,
  idempotency_key_reused: 422,
  request_in_progress: 409,
  request_interrupted: 409,
  invalid_cursor: 400,
  rate_limited: 429,
  backend_failed: 502,
  port_not_listening: 502,
  not_ready: 503,
  capacity_unavailable: 503,
  shutting_down: 503,
  internal: 500,
};

/** All codes, for schemas and exhaustive tests. */
export const ERROR_CODES = Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]];

/** The body of every error response. */
export const ErrorBody = z.strictObject({
  error: z.strictObject({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
    requestId: z.string(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
