import { ApiException } from "@kubernetes/client-node";
import { SandboxError } from "@shells/sandbox";

/** The HTTP status of a failed API call, when the API server answered. */
export function httpStatusOf(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  const code = (error as { code?: unknown; statusCode?: unknown } | null)?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The `Status` object an API server answered with, when it sent one. */
export function apiStatusOf(error: unknown): { reason?: string; message?: string } | null {
  if (!(error instanceof ApiException)) return null;
  let body: unknown = error.body as unknown;
  if (typeof body === "string") {
    const raw = body;
    try {
      body = JSON.parse(raw);
    } catch {
      return { message: raw };
    }
  }
  if (!body || typeof body !== "object") return null;
  const { reason, message } = body as Record<string, unknown>;
  return {
    ...(typeof reason === "string" ? { reason } : {}),
    ...(typeof message === "string" ? { message } : {}),
  };
}

/** 404: the object is not there (a delete of it is done). */
export const isNotFound = (error: unknown) => httpStatusOf(error) === 404;
/** 409: the name is taken (`AlreadyExists`) or the object changed under us (`Conflict`). */
export const isConflict = (error: unknown) => httpStatusOf(error) === 409;

/** An API failure as the one error type backends throw, with what the API server said. */
export function toSandboxError(error: unknown, doing: string): SandboxError {
  if (error instanceof SandboxError) return error;
  const status = httpStatusOf(error);
  const said =
    apiStatusOf(error)?.message ?? (error instanceof Error ? error.message : String(error));
  return new SandboxError(
    status === 403 ? "unavailable" : "failed",
    `${doing} failed${status ? ` (HTTP ${status})` : ""}: ${said.split("\n")[0]}`,
    status ? { httpStatus: status } : {},
    { cause: error },
  );
}
