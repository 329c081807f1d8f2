import {
  ROUTES,
  canonicalJson,
  type OperationId,
  type RouteBody,
  type RouteParams,
  type RouteQuery,
  type RouteResponse,
  type RouteSpec,
} from "@shells/contract";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { authenticate, type Caller, type OidcAuthenticator } from "../iam/authenticate.js";
import { requirePermission } from "../iam/authorize.js";
import { nowIso, sha256Hex } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { Database } from "../store/schema.js";
import { parseInput } from "./validate-input.js";

type Route<K extends OperationId> = (typeof ROUTES)[K];

/** What a handler receives: the authenticated caller (null on public routes) and parsed input. */
export interface HandlerContext<K extends OperationId> {
  caller: Route<K>["scope"] extends null ? null : Caller;
  params: RouteParams<K>;
  query: RouteQuery<K>;
  body: RouteBody<K>;
  request: FastifyRequest;
  reply: FastifyReply;
}

/** One handler per operation in the route table; a missing one does not compile. */
export type Handlers = {
  [K in OperationId]: (ctx: HandlerContext<K>) => Promise<RouteResponse<K> | typeof STREAMED>;
};

/**
 * Returned by a handler that wrote its own response (a server-sent event stream, raw bytes): the
 * wrapper then neither validates nor serialises anything.
 */
export const STREAMED = Symbol("streamed");

/** What registration needs besides the handlers. */
export interface RegisterOptions {
  db: Kysely<Database>;
  activity: ActivityService;
  validateResponses: boolean;
  /** Bearer JWTs and console sessions; null when OIDC is not configured. */
  oidc?: OidcAuthenticator | null;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/**
 * Registers every route of the contract's route table: authentication and scope check first, then
 * strict parsing of params, query and body, then idempotency, then the handler. A response that
 * breaks the contract is caught here when `validateResponses` is on.
 */
export function registerRoutes(
  app: FastifyInstance,
  handlers: Handlers,
  options: RegisterOptions,
): void {
  for (const [operationId, spec] of Object.entries(ROUTES) as [OperationId, RouteSpec][]) {
    // The table's handlers, seen through one operation-agnostic signature (the route's own schemas
    // have already shaped the context). eslint's type view deems this cast redundant; tsc does not.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    const handler = handlers[operationId] as (ctx: HandlerContext<OperationId>) => Promise<unknown>;
    app.route({
      method: spec.method,
      url: spec.path,
      ...(spec.rawBody ? { bodyLimit: spec.rawBody.maxBytes } : {}),
      handler: async (request, reply) => {
        let caller: Caller | null = null;
        if (spec.scope) {
          const csrfToken = request.headers["x-csrf-token"];
          caller = await authenticate(
            options.db,
            options.activity,
            {
              authorization: request.headers.authorization,
              cookie: request.headers.cookie,
              csrfToken: typeof csrfToken === "string" ? csrfToken : undefined,
            },
            { method: request.method, route: spec.path, ip: request.ip },
            options.oidc ?? null,
          );
          await requirePermission(
            options.activity,
            caller,
            { scope: spec.scope, minRole: spec.minRole },
            operationId,
          );
        }
        const params = spec.params ? parseInput(spec.params, request.params, "path") : {};
        const query = spec.query ? parseInput(spec.query, request.query ?? {}, "query") : {};
        let body: unknown = undefined;
        const rawTypes = spec.rawBody?.contentTypes;
        if (rawTypes) {
          const type = (request.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
          if (!Buffer.isBuffer(request.body) || !rawTypes.includes(type)) {
            throw new AppError(
              "unsupported_media_type",
              `Send this body as ${rawTypes.join(" or ")}.`,
              { accepted: rawTypes },
            );
          }
          body = request.body;
        } else if (Buffer.isBuffer(request.body)) {
          throw new AppError("unsupported_media_type", "Send request bodies as application/json.");
        } else if (spec.body) {
          if (request.body === undefined || request.body === null) {
            if (!spec.bodyOptional)
              throw new AppError(
                "malformed_request",
                "This route needs a JSON body (Content-Type: application/json).",
              );
            body = {};
          } else {
            body = parseInput(spec.body, request.body, "body");
          }
        }
        const run = async () => {
          const result = await handler({
            caller,
            params,
            query,
            body,
            request,
            reply,
          } as HandlerContext<OperationId>);
          if (result === STREAMED) return reply;
          if (options.validateResponses) {
            const checked = spec.response.safeParse(result);
            if (!checked.success) {
              request.log.error(
                { issues: checked.error.issues, operationId },
                "response breaks the contract",
              );
              throw new Error(`response of ${operationId} breaks the contract`);
            }
          }
          return result;
        };
        const idempotencyKey = request.headers["idempotency-key"];
        if (spec.idempotent && caller && idempotencyKey !== undefined) {
          return idempotent(options.db, caller, idempotencyKey, request, reply, spec, run);
        }
        reply.code(spec.successStatus);
        return run();
      },
    });
  }
}

/**
 * Runs a mutating request at most once per `Idempotency-Key` (per org): a replay gets the first
 * response back, a reuse with a different request is refused, and a replay while the first is
 * still running is told to retry. Server faults are not remembered, so a retry can succeed.
 */
async function idempotent(
  db: Kysely<Database>,
  caller: Caller,
  rawKey: string | string[],
  request: FastifyRequest,
  reply: FastifyReply,
  spec: RouteSpec,
  run: () => Promise<unknown>,
): Promise<unknown> {
  const key = Array.isArray(rawKey) ? rawKey[0] : rawKey;
  if (!key || !IDEMPOTENCY_KEY.test(key)) {
    throw new AppError(
      "validation_failed",
      "Idempotency-Key must be 1–255 printable ASCII characters.",
    );
  }
  const requestHash = sha256Hex(
    `${request.method} ${request.url}\n${canonicalJson(request.body ?? null)}`,
  );
  const inserted = await db
    .insertInto("idempotency_keys")
    .values({
      org_id: caller.orgId,
      key,
      request_hash: requestHash,
      state: "pending",
      status_code: null,
      response: null,
      created_at: nowIso(),
    })
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) {
    const previous = await db
      .selectFrom("idempotency_keys")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("key", "=", key)
      .executeTakeFirstOrThrow();
    if (previous.request_hash !== requestHash) {
      throw new AppError(
        "idempotency_key_reused",
        "This Idempotency-Key was used for a different request; use a new key.",
      );
    }
    if (
      previous.state === "pending" ||
      previous.status_code === null ||
      previous.response === null
    ) {
      throw new AppError(
        "request_in_progress",
        "The first request with this Idempotency-Key is still running; retry shortly.",
      );
    }
    reply.header("idempotent-replayed", "true");
    reply.code(previous.status_code);
    return JSON.parse(previous.response) as unknown;
  }
  const remember = async (status: number, response: unknown) => {
    await db
      .updateTable("idempotency_keys")
      .set({ state: "done", status_code: status, response: JSON.stringify(response) })
      .where("org_id", "=", caller.orgId)
      .where("key", "=", key)
      .execute();
  };
  try {
    reply.code(spec.successStatus);
    const result = await run();
    await remember(reply.statusCode, result);
    return result;
  } catch (error) {
    if (error instanceof AppError && error.status < 500) {
      await remember(error.status, {
        error: {
          code: error.code,
          message: error.message,
          ...(error.details ? { details: error.details } : {}),
          requestId: request.id,
        },
      });
    } else {
      await db
        .deleteFrom("idempotency_keys")
        .where("org_id", "=", caller.orgId)
        .where("key", "=", key)
        .execute();
    }
    throw error;
  }
}
