import type { Approval, ErrorCode, Shell } from "@shells/contract";

/**
 * Codes the SDK itself reports, for failures that never produced an API error body:
 * - `connection_failed`: the server could not be reached (refused, reset, DNS, TLS);
 * - `timeout`: no response within the client's `timeoutMs`;
 * - `aborted`: the caller's `AbortSignal` fired;
 * - `unexpected_response`: the server answered, but not with the JSON the contract promises;
 * - `invalid_configuration`: the client was constructed without a base URL or token;
 * - `invalid_signature`: a webhook delivery did not verify (`verifyWebhook`);
 * - `provisioning_failed`: a shell `waitUntilRunning` waited for ended in `error`.
 */
export type ClientErrorCode =
  | "connection_failed"
  | "timeout"
  | "aborted"
  | "unexpected_response"
  | "invalid_configuration"
  | "invalid_signature"
  | "provisioning_failed"
  | "approval_not_granted";

/** Every code a {@link ShellsError} can carry: the API's stable codes plus the SDK's own. */
export type ShellsErrorCode = ErrorCode | ClientErrorCode;

/** The fields every {@link ShellsError} carries. */
export interface ShellsErrorFields {
  code: ShellsErrorCode;
  message: string;
  /** HTTP status of the response; 0 when there was no response. */
  status: number;
  details?: Record<string, unknown> | undefined;
  /** The server's request id, to quote when reporting a problem; null when there was no response. */
  requestId?: string | null | undefined;
}

/**
 * The root of every error the SDK throws. Branch on `code` (stable, part of the contract) or on the
 * subclass, never on `message`.
 */
export class ShellsError extends Error {
  /** Stable error code. */
  readonly code: ShellsErrorCode;
  /** HTTP status of the response; 0 when there was no response. */
  readonly status: number;
  /** Structured context from the server (validation issues, what is missing, …). */
  readonly details: Record<string, unknown> | undefined;
  /** The server's request id; null when there was no response. */
  readonly requestId: string | null;

  constructor(fields: ShellsErrorFields, options?: { cause?: unknown }) {
    super(fields.message, options);
    this.name = new.target.name;
    this.code = fields.code;
    this.status = fields.status;
    this.details = fields.details;
    this.requestId = fields.requestId ?? null;
  }
}

/** 401: no credential, or one the server does not accept. */
export class AuthenticationError extends ShellsError {}

/**
 * 403: the credential is valid but lacks the scope or role the operation needs (`forbidden`), the
 * agent gate's entitlement (`entitlement_required`), or a console session's CSRF token (`csrf_failed`).
 */
export class PermissionDeniedError extends ShellsError {}

/**
 * 404: the shell, snapshot, project, member, agent, key, grant, approval or route does not exist (or
 * belongs to another org: the two are indistinguishable).
 */
export class NotFoundError extends ShellsError {}

/**
 * 409: the operation conflicts with the current state: an illegal lifecycle action, a name taken, an
 * approval already decided (`approval_closed`), the org's last owner (`last_owner`).
 */
export class ConflictError extends ShellsError {}

/**
 * 410: what was asked for existed and was removed for good: a run's artifacts, workspace changes
 * or diff after its retention ran out (`artifact_expired`, with `details.expiredAt`).
 */
export class GoneError extends ShellsError {}

/**
 * 428: the org gates this action by typed confirmation, and the request carried none or the wrong
 * one (`confirmation_required`). Repeat it with `confirm` set to the shell's name or id.
 */
export class ConfirmationRequiredError extends ShellsError {}

/**
 * The request itself was refused: 400 (malformed or invalid), 413 (too large), 415 (wrong media
 * type) or 422 (well-formed but not satisfiable: `runtime_unavailable`, or refused by org policy:
 * `below_isolation_floor`, `region_not_allowed`; or not served here: `region_unavailable`).
 */
export class ValidationError extends ShellsError {}

/** 429: too many requests. */
export class RateLimitError extends ShellsError {
  /** How long the server asks to wait before retrying, when it said. */
  get retryAfterMs(): number | undefined {
    const value = this.details?.["retryAfterMs"];
    return typeof value === "number" ? value : undefined;
  }
}

/** 5xx, or a response that is not what the contract promises (`unexpected_response`). */
export class ServerError extends ShellsError {}

/** The server could not be reached, did not answer in time, or the request was aborted. */
export class ConnectionError extends ShellsError {}

/**
 * A shell being provisioned ended in `error` (`provisioning_failed`; the message is its status
 * reason, which says what to do), or did not start within `waitUntilRunning`'s `timeoutMs`
 * (`timeout`). `shell` is the shell as last seen.
 */
export class ProvisioningError extends ShellsError {
  constructor(
    fields: ShellsErrorFields,
    readonly shell: Shell,
  ) {
    super(fields);
  }
}

/**
 * A request that waited for an approver did not go through: its approval was denied, withdrawn
 * or expired, or granted but the step failed (`approval.outcome` says why), or nobody decided
 * within the wait (`timeout`). `approval` is the approval as last seen.
 */
export class ApprovalNotGrantedError extends ShellsError {
  constructor(
    fields: ShellsErrorFields,
    readonly approval: Approval,
  ) {
    super(fields);
  }
}

/** The client was constructed without what it needs (base URL, token). */
export class ConfigurationError extends ShellsError {}

/** Picks the error class for an HTTP status. */
function errorClassForStatus(status: number): typeof ShellsError {
  if (status === 401) return AuthenticationError;
  if (status === 403) return PermissionDeniedError;
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 410) return GoneError;
  if (status === 428) return ConfirmationRequiredError;
  if (status === 429) return RateLimitError;
  if (status === 400 || status === 413 || status === 415 || status === 422) return ValidationError;
  if (status >= 500) return ServerError;
  return ShellsError;
}

/**
 * Builds the error for a non-2xx response from its status and (already read) body text. A body
 * that is not the contract's `{ error: { code, message, requestId } }` becomes a
 * {@link ServerError} with code `unexpected_response` that quotes the start of what came back.
 */
export function errorFromResponse(status: number, bodyText: string): ShellsError {
  const parsed = parseErrorBody(bodyText);
  if (!parsed) {
    return new ServerError({
      code: "unexpected_response",
      status,
      message: `the server answered HTTP ${status} without a Shells error body: ${excerpt(bodyText)}`,
    });
  }
  const ErrorClass = errorClassForStatus(status);
  return new ErrorClass({ ...parsed, status });
}

function parseErrorBody(bodyText: string): Omit<ShellsErrorFields, "status"> | undefined {
  let body: unknown;
  try {
    body = JSON.parse(bodyText);
  } catch {
    return undefined;
  }
  if (typeof body !== "object" || body === null) return undefined;
  const error = (body as { error?: unknown }).error;
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message, details, requestId } = error as Record<string, unknown>;
  if (typeof code !== "string" || typeof message !== "string") return undefined;
  return {
    // The server's codes are a closed registry; a newer server may add codes this SDK predates.
    code: code as ErrorCode,
    message,
    details:
      typeof details === "object" && details !== null && !Array.isArray(details)
        ? (details as Record<string, unknown>)
        : undefined,
    requestId: typeof requestId === "string" ? requestId : null,
  };
}

/** The first 200 characters of a body, on one line, for error messages. */
export function excerpt(text: string): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  if (oneLine === "") return "(empty body)";
  return oneLine.length > 200 ? `${oneLine.slice(0, 200)}…` : oneLine;
}

/**
 * Builds the error an `error` event of a stream carries: the usual error body, sent after the
 * response's 200 status, so the HTTP status is the one the error code has in the contract.
 */
export async function errorFromStreamEvent(data: string): Promise<ShellsError> {
  // Loaded on first use: the status registry lives with the contract's schemas.
  const { ERROR_STATUS } = await import("@shells/contract");
  const code = parseErrorBody(data)?.code;
  const status = code === undefined ? 500 : ((ERROR_STATUS as Record<string, number>)[code] ?? 500);
  return errorFromResponse(status, data);
}
