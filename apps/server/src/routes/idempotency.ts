import { canonicalJson, type RouteSpec } from "@shells/contract";
import type { FastifyReply, FastifyRequest } from "fastify";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/authenticate.js";
import { sha256Hex } from "../ids.js";
import type { IdempotencyService } from "../services/idempotency-service.js";
import { claimKey, findKey, finishKey, pruneKeys, releaseKey } from "../store/idempotency-store.js";
import { appErrorBody } from "./error-handler.js";

/** How long a finished request is remembered under its key. */
export const IDEMPOTENCY_RETENTION_MS = 24 * 60 * 60 * 1000;

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/**
 * Runs a mutating request at most once per `Idempotency-Key` (per org and principal): a replay gets
 * the first response back, a reuse with a different request is refused, and a replay while the
 * first is still running is told to retry. Server faults are not remembered, so a retry can succeed.
 * Keys belong to the principal that sent them: another member or agent presenting the same key
 * neither receives the first caller's response (an action recorded as someone else's) nor blocks
 * the first caller's retries. A pending key names the process that runs its request; should that
 * process die, the next one resolves the key (see `IdempotencyService`).
 */
export async function idempotent(
  keys: IdempotencyService,
  caller: Caller,
  rawKey: string | string[],
  request: FastifyRequest,
  reply: FastifyReply,
  operation: { operationId: string; spec: RouteSpec },
  run: () => Promise<unknown>,
): Promise<unknown> {
  const presented = Array.isArray(rawKey) ? rawKey[0] : rawKey;
  if (!presented || !IDEMPOTENCY_KEY.test(presented)) {
    throw new AppError(
      "validation_failed",
      "Idempotency-Key must be 1–255 printable ASCII characters.",
    );
  }
  const key = `${caller.actor.type}:${caller.actor.id}:${presented}`;
  const requestHash = sha256Hex(
    `${request.method} ${request.url}\n${canonicalJson(request.body ?? null)}`,
  );
  // Keys are remembered for a day: retries come within minutes, and the table must not grow with
  // every mutating request an org ever made.
  await pruneKeys(
    keys.db,
    caller.orgId,
    new Date(Date.now() - IDEMPOTENCY_RETENTION_MS).toISOString(),
  );
  // The insert decides, on every server sharing the store: exactly one request claims the key;
  // every other finds the claim (or its outcome). A claim released between the two statements
  // (the first request failed) is claimed again.
  for (let attempt = 0; ; attempt += 1) {
    const claimed = await claimKey(keys.db, {
      orgId: caller.orgId,
      key,
      requestHash,
      operation: operation.operationId,
      requestId: request.id,
      owner: keys.bootId,
      leaseExpiresAt: keys.leaseExpiresAt(),
      createdAt: new Date().toISOString(),
    });
    if (claimed) break;
    const previous = await findKey(keys.db, caller.orgId, key);
    if (!previous && attempt < 3) continue;
    if (previous && previous.request_hash !== requestHash) {
      throw new AppError(
        "idempotency_key_reused",
        "This Idempotency-Key was used for a different request; use a new key.",
      );
    }
    if (
      !previous ||
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
  try {
    reply.code(operation.spec.successStatus);
    const result = await keys.runKeyed(caller.orgId, key, run);
    await finishKey(keys.db, caller.orgId, key, reply.statusCode, result);
    return result;
  } catch (error) {
    if (error instanceof AppError && error.status < 500) {
      await finishKey(keys.db, caller.orgId, key, error.status, appErrorBody(error, request.id));
    } else {
      await releaseKey(keys.db, caller.orgId, key);
    }
    throw error;
  }
}
