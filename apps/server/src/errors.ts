import { ERROR_STATUS, type ErrorCode } from "@shells/contract";

/** The one error type the server throws at its API boundary. Its code decides the HTTP status. */
export class AppError extends Error {
  override readonly name = "AppError";
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.status = ERROR_STATUS[code];
  }
}
