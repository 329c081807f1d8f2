import { SandboxError, type SandboxBackend } from "@shells/sandbox";
import type { FastifyBaseLogger as Logger } from "fastify";
import { AppError } from "../errors.js";

/**
 * The one translation from a backend's `SandboxError` to the API's error registry, shared by every
 * service that calls a backend. Unexpected faults are logged with their cause and answered as
 * `backend_failed` without internals.
 */
export function toApiError(error: unknown, shellId: string, logger: Logger): AppError {
  if (error instanceof AppError) return error;
  if (!(error instanceof SandboxError)) {
    logger.error({ err: error, shellId }, "backend call failed");
    return new AppError(
      "backend_failed",
      `The sandbox backend failed: ${describeError(error)}`,
      { shellId },
      { cause: error },
    );
  }
  switch (error.code) {
    case "not_running":
      return new AppError("invalid_state", `Shell ${shellId}'s sandbox is not running.`, {
        shellId,
      });
    case "paused":
      return new AppError("shell_paused", `Shell ${shellId} is paused; resume it first.`, {
        shellId,
        hint: "resume it with the `resume` action",
      });
    case "connection_refused":
      return new AppError(
        "port_not_listening",
        `Nothing listens on that port in shell ${shellId}; start the server (listening on 127.0.0.1, ::1 or all addresses), then retry.`,
        { shellId, ...error.details },
      );
    case "snapshot_not_found":
      return new AppError("snapshot_not_found", error.message, { shellId });
    case "unavailable":
      return new AppError("runtime_unavailable", error.message, {
        ...error.details,
        missing: error.message,
      });
    case "unsupported":
      if (error.details.unsupportedCommand)
        return new AppError("unsupported_command", error.message, {
          accepted: error.details.accepted,
        });
      return new AppError("validation_failed", error.message, error.details);
    case "path_not_found":
      return new AppError("file_not_found", error.message, error.details);
    case "wrong_file_type":
      return new AppError("wrong_file_type", error.message, error.details);
    case "not_found":
      return new AppError(
        "backend_failed",
        `The backend no longer holds shell ${shellId}'s sandbox; restart it to provision a fresh one.`,
        { shellId },
      );
    case "failed":
      if (error.details.tooLarge)
        return new AppError("file_too_large", error.message, error.details);
      // A write the shell's disk quota has no room for (backends that account it say so).
      if (error.details.noSpace)
        return new AppError("quota_exceeded", error.message, { quota: "disk", ...error.details });
      logger.error({ err: error, shellId }, "backend call failed");
      return new AppError(
        "backend_failed",
        `The sandbox backend failed: ${error.message}`,
        { shellId },
        { cause: error },
      );
  }
}

/** An error's message, for logs and failure records. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Calls the backend that holds a shell, with its errors translated by `toApiError`. A shell whose
 * backend is not configured on this server answers `backend_failed`.
 */
export async function callBackend<T>(
  backend: SandboxBackend | undefined,
  shell: { id: string; name: string; backend: string },
  fn: (backend: SandboxBackend) => Promise<T>,
  logger: Logger,
): Promise<T> {
  if (!backend)
    throw new AppError(
      "backend_failed",
      `The ${shell.backend} backend that holds shell ${shell.name} is not configured on this server.`,
    );
  try {
    return await fn(backend);
  } catch (error) {
    throw toApiError(error, shell.id, logger);
  }
}
