import { canonicalJson, type RouteSpec } from "@shells/contract";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/authenticate.js";
import { nowIso, sha256Hex } from "../ids.js";
import type { Database } from "../store/schema.js";
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
 * the first caller's retries.
 */
export async function idempotent(
  db: Kysely<Database>,
  caller: Caller,
  rawKey: string | string[],
  request: FastifyRequest,
  reply: FastifyReply,
  spec: RouteSpec,
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
  await db
    .deleteFrom("idempotency_keys")
    .where("org_id", "=", caller.orgId)
    .where("created_at", "<", new Date(Date.now() - IDEMPOTENCY_RETENTION_MS).toISOString())
    .execute();
  // The insert decides, on every server sharing the store: exactly one request claims the key;
  // every other finds the claim (or its outcome). A claim released between the two statements
  // (the first request failed) is claimed again.
  for (let attempt = 0; ; attempt += 1) {
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
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) > 0) break;
    const previous = await db
      .selectFrom("idempotency_keys")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("key", "=", key)
      .executeTakeFirst();
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
      await remember(error.status, appErrorBody(error, request.id));
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
