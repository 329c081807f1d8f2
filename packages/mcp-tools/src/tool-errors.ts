import type { ErrorCode } from "@shells/contract";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";

/**
 * What a failed tool call carries: the gate's stable code, its message and details. Server-side
 * `AppError`s and the SDK's `ShellsError`s both have this shape.
 */
export interface ToolFailure {
  code: string;
  message: string;
  details?: Record<string, unknown> | undefined;
  /** The control plane's request id, when the failure came back over HTTP. */
  requestId?: string | null | undefined;
}

/**
 * Codes the SDK reports for failures that never reached the gate (see `ShellsError` in
 * `@l1fe/shells`); the stdio server meets them when the control plane is unreachable.
 */
type ClientErrorCode = "connection_failed" | "timeout" | "aborted" | "unexpected_response";

/**
 * The next step a model can take for each code: who can fix it, or how to call again. Codes
 * without a hint (nothing an agent can do differently) get none.
 */
const NEXT_STEP: Partial<Record<ErrorCode | ClientErrorCode, string>> = {
  entitlement_required:
    "ask an org admin to grant shells.agent.invoke to this agent (or user): `shells entitlements grant --agent <id>`. Retrying will not help until then.",
  forbidden:
    "this credential lacks the permission named above; ask an org admin for an API key with that scope (or a role that allows it).",
  unauthenticated:
    "the API token was refused: check SHELLS_API_TOKEN (a key may have been revoked or its holder disabled).",
  confirmation_required:
    "this is a destructive action gated by typed confirmation. Only if the user asked for it, call again with `confirm` set to the shell's name or id.",
  validation_failed:
    "fix the arguments named above (the tool's inputSchema lists every field and its limits) and call again.",
  shell_not_found:
    "call shells_list to see the shells this org has; pass a shell's `id` or `name` as `shell`.",
  snapshot_not_found:
    "take one first with shells_action capability `snapshot`, or omit `snapshot` to restore the newest.",
  invalid_state:
    "check the shell's status with shells_list: a stopped shell needs capability `start`, a shell in `error` needs `restart`.",
  shell_paused:
    "the shell is paused: call shells_action with capability `resume` (only if the user wants it running again), then retry.",
  name_taken: "choose another `name`, or omit it to name the shell after its id.",
  project_not_found: "omit `project` to use the default project.",
  below_isolation_floor:
    "the org requires a stronger runtime: choose one at or above the floor (wasm < container < microvm).",
  region_not_allowed: "omit `region`, or choose one of the org's allowed regions.",
  runtime_unavailable:
    "this host cannot run that runtime class (`details.missing` says why); choose another runtime.",
  network_mode_unavailable: "choose another network mode (`sealed` always works).",
  invalid_cursor: "call shells_list again without `cursor` to start from the first page.",
  rate_limited: "wait `details.retryAfterMs` milliseconds, then retry.",
  request_in_progress: "the same request is still running; retry shortly.",
  request_interrupted:
    "the first try was cut off by a restart after it made the shells in `details.shells`; check them with shells_list instead of creating more.",
  backend_failed:
    "the sandbox backend failed; check the shell with shells_list: `restart` may recover a shell in state `error`.",
  not_ready: "the control plane is starting or degraded; retry in a few seconds.",
  capacity_unavailable:
    "the host is full for now (`details.reason`); wait `details.retryAfterMs` milliseconds, then retry. Nothing was created.",
  shutting_down: "the control plane is restarting; retry in a few seconds.",
  internal: "a server fault, not caused by the input; retry once, then report the request id.",
  connection_failed:
    "the Shells control plane could not be reached at SHELLS_URL; it may be down. Retry later or tell the user.",
  timeout:
    "the control plane did not answer in time; the operation may still complete. Check with shells_list before retrying.",
  unexpected_response:
    "the control plane answered something other than the Shells API (a proxy page?); tell the user.",
};

const STABLE_CODE = /^[a-z][a-z0-9_]*$/;

/** What a model is told about a failure that carries no stable code: a bug, not a refusal. */
export const UNEXPECTED_FAILURE: Readonly<ToolFailure> = Object.freeze({
  code: "internal",
  message: "Unexpected error in the Shells MCP server; it is in the server's log.",
});

/**
 * Reads a thrown value as a {@link ToolFailure}. A value without a stable lowercase `code` and a
 * `message` (a programming error, a Node system error) becomes {@link UNEXPECTED_FAILURE}: its
 * text and stack belong in the server's log, never in a model's context.
 */
export function toToolFailure(error: unknown): ToolFailure {
  if (typeof error === "object" && error !== null) {
    const { code, message, details, requestId } = error as Record<string, unknown>;
    if (typeof code === "string" && STABLE_CODE.test(code) && typeof message === "string") {
      return {
        code,
        message,
        details:
          typeof details === "object" && details !== null && !Array.isArray(details)
            ? (details as Record<string, unknown>)
            : undefined,
        requestId: typeof requestId === "string" ? requestId : undefined,
      };
    }
  }
  return UNEXPECTED_FAILURE;
}

/**
 * Renders a failed call as an MCP tool error (`isError: true`): the text a model reads (code,
 * message, the next step) and the same as `structuredContent.error` for programs.
 */
export function renderToolError(failure: ToolFailure): CallToolResult {
  const nextStep = NEXT_STEP[failure.code as ErrorCode | ClientErrorCode];
  const lines = [`Error ${failure.code}: ${failure.message}`];
  if (nextStep) lines.push(`Next step: ${nextStep}`);
  if (failure.requestId) lines.push(`Request id: ${failure.requestId}`);
  return {
    isError: true,
    content: [{ type: "text", text: lines.join("\n") }],
    structuredContent: {
      error: {
        code: failure.code,
        message: failure.message,
        ...(failure.details ? { details: failure.details } : {}),
        ...(nextStep ? { nextStep } : {}),
        ...(failure.requestId ? { requestId: failure.requestId } : {}),
      },
    },
  };
}
