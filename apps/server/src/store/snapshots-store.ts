import type { Snapshot } from "@shells/contract";
import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/**
 * The `snapshots` table: the size on the host's disk of every snapshot archive a backend wrote,
 * per org, so quotas can be checked without asking every backend. The backend stays the truth
 * about which snapshots exist; this table counts what they cost.
 */

/** Records (or replaces, for a name taken again) a snapshot of one of the org's shells. */
export async function recordSnapshot(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  snapshot: Snapshot,
): Promise<void> {
  await db
    .insertInto("snapshots")
    .values({
      org_id: orgId,
      shell_id: shellId,
      name: snapshot.name,
      size_bytes: snapshot.sizeBytes,
      created_at: snapshot.createdAt,
    })
    .onConflict((oc) =>
      oc
        .columns(["shell_id", "name"])
        .doUpdateSet({ size_bytes: snapshot.sizeBytes, created_at: snapshot.createdAt }),
    )
    .execute();
}

/** Forgets the snapshots of one of the org's shells (the backend reclaimed them). */
export async function forgetShellSnapshots(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
): Promise<void> {
  await db
    .deleteFrom("snapshots")
    .where("org_id", "=", orgId)
    .where("shell_id", "=", shellId)
    .execute();
}

/** Bytes the org's snapshots hold on disk, leaving out `exceptShellId`'s. */
export async function orgSnapshotBytes(
  db: Kysely<Database>,
  orgId: string,
  exceptShellId?: string,
): Promise<number> {
  let q = db
    .selectFrom("snapshots")
    .select((eb) => eb.fn.sum<number | string | null>("size_bytes").as("bytes"))
    .where("org_id", "=", orgId);
  if (exceptShellId) q = q.where("shell_id", "!=", exceptShellId);
  const row = await q.executeTakeFirst();
  return Number(row?.bytes ?? 0);
}
