import fastifyRateLimit from "@fastify/rate-limit";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { AuthFailureLog } from "../iam/auth-failure-log.js";
import {
  authenticate,
  requestCredentials,
  type Caller,
  type OidcAuthenticator,
} from "../iam/authenticate.js";
import type { Database } from "../store/schema.js";

/** Authenticates a request for `route` (for the record of a refusal), or throws. */
export type AuthenticateRequest = (
  request: FastifyRequest,
  reply: FastifyReply,
  route: string,
) => Promise<Caller>;

/** What request authentication is built from. */
export interface RequestAuthOptions {
  db: Kysely<Database>;
  failures: AuthFailureLog;
  /** Bearer JWTs and console sessions; null when OIDC is not configured. */
  oidc: OidcAuthenticator | null;
  /** Refused authentications one address may cause per window before it gets 429. */
  failureLimit: number;
  windowMs: number;
}

/** The `rate_limited` refusal, with the wait in `details.retryAfterMs`. */
export function rateLimited(retryAfterMs: number): AppError {
  return new AppError("rate_limited", "Too many refused requests from this address; retry later.", {
    retryAfterMs,
  });
}

/**
 * Registers `@fastify/rate-limit` (off by default; routes opt in with `config.rateLimit`) and returns
 * the one request authenticator the route table and `/mcp` use. Refused authentications are counted
 * per address: past `failureLimit` in a window the address is answered 429 `rate_limited` with
 * `Retry-After` instead of 401, so anonymous callers cannot make the server do unbounded work.
 * A caller that authenticates is never counted or throttled.
 */
export async function registerRequestAuth(
  app: FastifyInstance,
  options: RequestAuthOptions,
): Promise<AuthenticateRequest> {
  await app.register(fastifyRateLimit, {
    global: false,
    timeWindow: options.windowMs,
    max: options.failureLimit,
    errorResponseBuilder: (_request, context) => rateLimited(context.ttl),
  });
  const countFailure = app.createRateLimit({
    max: options.failureLimit,
    timeWindow: options.windowMs,
  });
  return async (request, reply, route) => {
    try {
      return await authenticate(
        options.db,
        options.failures,
        requestCredentials(request),
        { method: request.method, route, ip: request.ip },
        options.oidc,
      );
    } catch (error) {
      if (error instanceof AppError && error.code === "unauthenticated") {
        const count = await countFailure(request);
        if (!count.isAllowed && count.isExceeded) {
          reply.header("retry-after", count.ttlInSeconds);
          throw rateLimited(count.ttl);
        }
      }
      throw error;
    }
  };
}
