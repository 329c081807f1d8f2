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
import type { CallerCache } from "../iam/caller-cache.js";
import type { Database } from "../store/schema.js";
import { noteOrg } from "../tracing/request-spans.js";

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
  /** API keys' verified callers, reused for a moment (see `CallerCache`); none: every request reads the store. */
  callers?: CallerCache;
  /** Requests one credential may make per `requestWindowMs` before it gets 429; 0 turns it off. */
  requestLimit: number;
  requestWindowMs: number;
}

/** The `rate_limited` refusal, with the wait in `details.retryAfterMs`. */
export function rateLimited(retryAfterMs: number): AppError {
  return new AppError("rate_limited", "Too many refused requests from this address; retry later.", {
    retryAfterMs,
  });
}

/**
 * What a caller's requests are counted under: the API key, or for a console session or a JWT (no
 * key) the person or agent. Two keys of one holder are two budgets; revoking one ends its own.
 */
function requestBudgetOf(caller: Caller): string {
  return caller.keyId ?? `${caller.orgId}:${caller.actor.type}:${caller.actor.id}`;
}

/**
 * Registers `@fastify/rate-limit` (off by default; routes opt in with `config.rateLimit`) and returns
 * the one request authenticator the route table and `/mcp` use. Two budgets, both answered 429
 * `rate_limited` with `Retry-After` when spent:
 * - refused authentications, per address: past `failureLimit` in a window the address is answered
 *   429 instead of 401, so anonymous callers cannot make the server do unbounded work;
 * - requests of an authenticated caller, per API key (or per person or agent for sessions and
 *   JWTs): past `requestLimit` in `requestWindowMs`, so one runaway client cannot starve the
 *   others. Every answer carries `x-ratelimit-limit`, `x-ratelimit-remaining` and
 *   `x-ratelimit-reset` (seconds) of that budget.
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
  const budgets = new WeakMap<FastifyRequest, string>();
  const countRequest =
    options.requestLimit > 0
      ? app.createRateLimit({
          max: options.requestLimit,
          timeWindow: options.requestWindowMs,
          keyGenerator: (request) => budgets.get(request) ?? request.ip,
        })
      : null;
  const spend = async (request: FastifyRequest, reply: FastifyReply, caller: Caller) => {
    if (!countRequest) return;
    budgets.set(request, requestBudgetOf(caller));
    const count = await countRequest(request);
    if (count.isAllowed) return; // never: no allow list is configured
    reply.header("x-ratelimit-limit", options.requestLimit);
    reply.header("x-ratelimit-remaining", count.remaining);
    reply.header("x-ratelimit-reset", count.ttlInSeconds);
    if (count.isExceeded) {
      reply.header("retry-after", count.ttlInSeconds);
      throw new AppError(
        "rate_limited",
        `This credential made more than ${options.requestLimit} requests in ${options.requestWindowMs / 1000} s; retry later.`,
        { retryAfterMs: count.ttl, limit: options.requestLimit },
      );
    }
  };
  return async (request, reply, route) => {
    let caller: Caller;
    try {
      caller = await authenticate(
        options.db,
        options.failures,
        requestCredentials(request),
        { method: request.method, route, ip: request.ip },
        options.oidc,
        options.callers,
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
    noteOrg(caller.orgId);
    await spend(request, reply, caller);
    return caller;
  };
}
