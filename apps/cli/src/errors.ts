import { CommanderError } from "commander";
import { ConflictError, ShellsError, ValidationError } from "@l1fe/shells";

/** Exit status of a command line the CLI could not make sense of. */
export const USAGE_EXIT_CODE = 2;

/** A failure found by the CLI itself (no token, server not built, …), with what to do next. */
export class CliError extends Error {
  /** Stable code, printed as `error: <code>: <message>`. */
  readonly code: string;
  /** One line telling the user what to do about it. */
  readonly hint: string | undefined;
  /** Process exit status. */
  readonly exitCode: number;

  constructor(code: string, message: string, options: { hint?: string; exitCode?: number } = {}) {
    super(message);
    this.name = "CliError";
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
  }
}

/** What the user can do about an API error, by code. */
const HINTS: Partial<Record<string, string>> = {
  unauthenticated:
    "the server refused the token: pass --token or set SHELLS_API_TOKEN (a local server writes its admin key to <data dir>/admin-token)",
  forbidden:
    "your role or the token's scopes do not allow this (`shells whoami` shows both); ask an org admin",
  connection_failed:
    "is the server running? start one with `shells serve`, or point --url / SHELLS_URL at it",
  timeout: "the server did not answer in time; check it with `shells whoami`",
  shell_not_found: "list your shells with `shells ls`",
  invalid_state: "see the shell's status with `shells get <id>`",
  shell_paused: "resume it with `shells action <id> resume`",
  runtime_unavailable: "see which runtime classes this server can run with `shells runtimes`",
  name_taken:
    "choose a name (or email) not yet in use; a shell created without --name is named after its id",
  confirmation_required: "repeat with --confirm <the shell's name or id>",
  entitlement_required:
    "an admin grants it with `shells entitlements grant --agent <id>` (or --user <id>)",
  below_isolation_floor:
    "see the floor with `shells policy get`, and pick a --runtime at or above it",
  region_not_allowed: "see the allowed regions with `shells policy get`",
  region_unavailable:
    "pick one of the regions this server offers (details.offered), or leave --region out",
  capacity_exhausted:
    "wait for a shell of this class to stop, try another region (`shells doctor` shows each one's slots), or ask the operator for a reservation",
  approval_closed: "see its state with `shells approvals get <id>`",
  last_owner: "make another member an owner first: `shells members set-role <id> owner`",
};

/**
 * Prints an error as `error: <code>: <message>`, followed by details and a hint where there is one,
 * and returns the exit status to end with.
 */
export function reportError(error: unknown, writeErr: (text: string) => void): number {
  if (error instanceof CommanderError) {
    // Commander has printed its own message already (see `outputError` in program.ts).
    return error.exitCode === 0 ? 0 : USAGE_EXIT_CODE;
  }
  if (error instanceof CliError) {
    writeErr(`error: ${error.code}: ${error.message}\n`);
    if (error.hint) writeErr(`hint: ${error.hint}\n`);
    return error.exitCode;
  }
  if (error instanceof ShellsError) {
    writeErr(`error: ${error.code}: ${error.message}\n`);
    const { issues, hint: serverHint, ...rest } = error.details ?? {};
    if (Array.isArray(issues)) {
      for (const issue of issues as { path?: unknown; message?: unknown }[]) {
        writeErr(`  ${asText(issue.path)}: ${asText(issue.message)}\n`);
      }
    }
    // Details that explain a refusal are worth reading; a 404's echo of the id is not.
    if (
      (error instanceof ValidationError || error instanceof ConflictError) &&
      Object.keys(rest).length > 0
    ) {
      writeErr(`details: ${JSON.stringify(rest)}\n`);
    }
    const hint = typeof serverHint === "string" ? serverHint : HINTS[error.code];
    if (hint) writeErr(`hint: ${hint}\n`);
    if (error.status >= 500 && error.requestId) writeErr(`request id: ${error.requestId}\n`);
    return 1;
  }
  const message = error instanceof Error ? error.message : String(error);
  writeErr(`error: internal: ${message}\n`);
  return 1;
}

function asText(value: unknown): string {
  return typeof value === "string" ? value : (JSON.stringify(value) ?? "");
}
