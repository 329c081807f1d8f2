import type { Kysely, Selectable } from "kysely";
import { compiledOnce, type QueryParam } from "./compiled-query.js";
import type { Database, IdempotencyTable } from "./schema.js";

/**
 * The `idempotency_keys` table. A key is `pending` while its first request runs, owned by the
 * control-plane process running it (its boot id) under a lease that process renews, and `done`
 * once its response is remembered. Every query here is plain Kysely, portable across dialects.
 */

/** A key's row. */
export type IdempotencyRow = Selectable<IdempotencyTable>;

/** What a pending key's request made so far (each noted before it was made). */
export interface KeyEffects {
  shells: string[];
}

/** Forgets the org's keys created before `before` (ISO time). */
export async function pruneKeys(
  db: Kysely<Database>,
  orgId: string,
  before: string,
): Promise<void> {
  await pruneQuery(db, { orgId, before });
}

/** Every keyed request prunes, and finishes its key: both are compiled once. */
const pruneQuery = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId" | "before">) =>
  db
    .deleteFrom("idempotency_keys")
    .where("org_id", "=", param("orgId"))
    .where("created_at", "<", param("before")),
);
const finishQuery = compiledOnce(
  (db: Kysely<Database>, param: QueryParam<"orgId" | "key" | "status" | "response">) =>
    db
      .updateTable("idempotency_keys")
      .set({
        state: "done",
        status_code: param("status") as unknown as number,
        response: param("response"),
        owner: null,
        lease_expires_at: null,
      })
      .where("org_id", "=", param("orgId"))
      .where("key", "=", param("key")),
);

/**
 * Claims a key for a request this process runs now. False when the key exists already (a replay,
 * a reuse, or a request still pending).
 */
export async function claimKey(
  db: Kysely<Database>,
  claim: {
    orgId: string;
    key: string;
    requestHash: string;
    operation: string;
    requestId: string;
    owner: string;
    leaseExpiresAt: string;
    createdAt: string;
  },
): Promise<boolean> {
  const inserted = await db
    .insertInto("idempotency_keys")
    .values({
      org_id: claim.orgId,
      key: claim.key,
      request_hash: claim.requestHash,
      state: "pending",
      status_code: null,
      response: null,
      created_at: claim.createdAt,
      owner: claim.owner,
      lease_expires_at: claim.leaseExpiresAt,
      operation: claim.operation,
      request_id: claim.requestId,
      effects: null,
    })
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  return Number(inserted.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** One key of the org. */
export async function findKey(
  db: Kysely<Database>,
  orgId: string,
  key: string,
): Promise<IdempotencyRow | undefined> {
  return db
    .selectFrom("idempotency_keys")
    .selectAll()
    .where("org_id", "=", orgId)
    .where("key", "=", key)
    .executeTakeFirst();
}

/** Remembers a key's response: replays answer it from now on. */
export async function finishKey(
  db: Kysely<Database>,
  orgId: string,
  key: string,
  status: number,
  response: unknown,
): Promise<void> {
  await finishQuery(db, {
    orgId,
    key,
    status,
    // Nothing to remember is NULL, as the claim left it.
    response: response === undefined ? null : JSON.stringify(response),
  });
}

/** Forgets a key, so a retry with it runs the request afresh. */
export async function releaseKey(db: Kysely<Database>, orgId: string, key: string): Promise<void> {
  await db
    .deleteFrom("idempotency_keys")
    .where("org_id", "=", orgId)
    .where("key", "=", key)
    .execute();
}

/** Adds what a pending key's request is about to make to its effects. */
export async function noteKeyEffects(
  db: Kysely<Database>,
  orgId: string,
  key: string,
  effects: KeyEffects,
): Promise<void> {
  await db
    .updateTable("idempotency_keys")
    .set({ effects: JSON.stringify(effects) })
    .where("org_id", "=", orgId)
    .where("key", "=", key)
    .where("state", "=", "pending")
    .execute();
}

/** Extends the lease of every key `owner` holds pending. */
export async function renewKeyLeases(
  db: Kysely<Database>,
  owner: string,
  leaseExpiresAt: string,
): Promise<void> {
  await db
    .updateTable("idempotency_keys")
    .set({ lease_expires_at: leaseExpiresAt })
    .where("owner", "=", owner)
    .where("state", "=", "pending")
    .execute();
}

/**
 * Pending keys across orgs that no live process vouches for: owned by another process (or by
 * none, before 0020) whose lease ran out before `expiredBefore`, or, with `expiredBefore` null,
 * every pending key another process owns (a store no other process uses: its owners are dead).
 */
export async function abandonedKeysAcrossOrgs(
  db: Kysely<Database>,
  owner: string,
  expiredBefore: string | null,
): Promise<IdempotencyRow[]> {
  let query = db
    .selectFrom("idempotency_keys")
    .selectAll()
    .where("state", "=", "pending")
    .where((eb) => eb.or([eb("owner", "is", null), eb("owner", "!=", owner)]));
  if (expiredBefore !== null)
    query = query.where((eb) =>
      eb.or([eb("lease_expires_at", "is", null), eb("lease_expires_at", "<", expiredBefore)]),
    );
  return query.execute();
}

/**
 * Takes over an abandoned key (only while it is still pending under the owner it was found
 * with), so of two processes resolving it only one does. True when this call took it.
 */
export async function takeOverKey(
  db: Kysely<Database>,
  row: IdempotencyRow,
  owner: string,
): Promise<boolean> {
  const updated = await db
    .updateTable("idempotency_keys")
    .set({ owner })
    .where("org_id", "=", row.org_id)
    .where("key", "=", row.key)
    .where("state", "=", "pending")
    .where((eb) => (row.owner === null ? eb("owner", "is", null) : eb("owner", "=", row.owner)))
    .executeTakeFirst();
  return Number(updated.numUpdatedRows) > 0;
}
