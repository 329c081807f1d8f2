import { ERROR_STATUS, type ErrorBody } from "@shells/contract";
import type {
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  FastifyServerOptions,
} from "fastify";
import { AppError } from "../errors.js";

/** The challenge every 401 carries: a bearer token (API key or JWT) for the Shells realm. */
export const WWW_AUTHENTICATE = 'Bearer realm="shells"';

/** The one error body every refusal is answered with (routes, idempotency replays, stream frames). */
export function errorBody(
  code: AppError["code"],
  message: string,
  requestId: string,
  details?: Record<string, unknown>,
): ErrorBody {
  return { error: { code, message, ...(details ? { details } : {}), requestId } };
}

/** The error body of an `AppError`. */
export function appErrorBody(error: AppError, requestId: string): ErrorBody {
  return errorBody(error.code, error.message, requestId, error.details);
}

/**
 * Router-level faults (an undecodable URL, an overlong path parameter) bypass the error handler;
 * this answers them in the same error shape. Pass it as Fastify's `frameworkErrors` option.
 */
export const frameworkErrors: NonNullable<FastifyServerOptions["frameworkErrors"]> = (
  error,
  request,
  reply,
) => {
  const code =
    error.code === "FST_ERR_MAX_PARAM_LENGTH" ? "validation_failed" : "malformed_request";
  void (reply as FastifyReply)
    .code(400)
    .send(errorBody(code, `Malformed request: ${error.message}`, request.id));
};

/**
 * Installs the not-found and error handlers: an `AppError` answers with its code and status,
 * Fastify's own 4xx faults map to stable codes, and anything else is a logged 500 whose body says
 * nothing but the request id.
 */
export function registerErrorHandler(
  app: FastifyInstance,
  options: { bodyLimitBytes: number },
): void {
  app.setNotFoundHandler(async (request, reply) => {
    reply.code(404);
    return errorBody(
      "route_not_found",
      `No route ${request.method} ${request.url.split("?")[0] ?? ""}. See /docs.`,
      request.id,
    );
  });
  app.setErrorHandler(
    async (error: FastifyError | AppError, request: FastifyRequest, reply: FastifyReply) => {
      if (error instanceof AppError) {
        reply.code(error.status);
        // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
        if (error.code === "unauthenticated") reply.header("www-authenticate", WWW_AUTHENTICATE);
        // A refusal that names its wait says it in the header clients and proxies honour too.
        const retryAfterMs = error.details?.["retryAfterMs"];
        if ((error.status === 429 || error.status === 503) && typeof retryAfterMs === "number")
          reply.header("retry-after", String(Math.max(1, Math.ceil(retryAfterMs / 1000))));
        return appErrorBody(error, request.id);
      }
      const status = error.statusCode ?? 500;
      if (status === 413) {
        reply.code(413);
        return errorBody(
          "payload_too_large",
          `The body is larger than ${options.bodyLimitBytes} bytes.`,
          request.id,
          { limitBytes: options.bodyLimitBytes },
        );
      }
      if (status === 415) {
        reply.code(415);
        return errorBody(
          "unsupported_media_type",
          "Send request bodies as application/json.",
          request.id,
        );
      }
      if (status >= 400 && status < 500) {
        reply.code(400);
        return errorBody("malformed_request", `Malformed request: ${error.message}`, request.id);
      }
      request.log.error({ err: error }, "unhandled error");
      reply.code(ERROR_STATUS.internal);
      return errorBody("internal", "Internal error; report the request id.", request.id);
    },
  );
}
