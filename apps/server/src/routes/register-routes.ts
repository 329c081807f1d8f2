import {
  ROUTES,
  type OperationId,
  type RouteBody,
  type RouteParams,
  type RouteQuery,
  type RouteResponse,
  type RouteSpec,
} from "@shells/contract";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/authenticate.js";
import { requirePermission } from "../iam/authorize.js";
import type { ActivityService } from "../services/activity-service.js";
import type { IdempotencyService } from "../services/idempotency-service.js";
import { idempotent } from "./idempotency.js";
import type { AuthenticateRequest } from "./request-auth.js";
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

/** Answers with raw bytes of `type` (file contents, archives, artifacts). */
export function sendBytes(reply: FastifyReply, type: string, bytes: Uint8Array): typeof STREAMED {
  void reply
    .header("content-type", type)
    .header("content-length", bytes.length)
    .send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
  return STREAMED;
}

/** What registration needs besides the handlers. */
export interface RegisterOptions {
  /** Keeps `Idempotency-Key`s and resolves those of a process that died. */
  idempotency: IdempotencyService;
  activity: ActivityService;
  validateResponses: boolean;
  /** The one request authenticator (credentials, failure log, failure rate limit). */
  authenticate: AuthenticateRequest;
}

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
          caller = await options.authenticate(request, reply, spec.path);
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
          return idempotent(
            options.idempotency,
            caller,
            idempotencyKey,
            request,
            reply,
            { operationId, spec },
            run,
          );
        }
        reply.code(spec.successStatus);
        return run();
      },
    });
  }
}
