import { type Kysely, type Selectable } from "kysely";
import type { Database, ShellTable } from "./schema.js";
import { compiledOnce, type QueryParam } from "./compiled-query.js";
import { moveShellMeter } from "./usage-store.js";

/**
 * The `shells` table. Every function that reads or changes one org's shells takes the org id and
 * filters by it itself, so no caller can reach another org's rows by forgetting the filter. The
 * functions named `…AcrossOrgs` serve the reconciler, which works for the whole server.
 */

/** A shell row with its project's name. */
export type ShellRow = Selectable<ShellTable> & { project_name: string };

/** Fields a lifecycle step changes. */
export type ShellStateFields = Partial<
  Pick<
    ShellTable,
    | "status"
    | "status_reason"
    | "image_version"
    | "isolation"
    | "deleted_at"
    | "delete_requested_by"
  >
>;

function selectShells(db: Kysely<Database>, orgId: string) {
  return db
    .selectFrom("shells")
    .innerJoin("projects", "projects.id", "shells.project_id")
    .selectAll("shells")
    .select("projects.name as project_name")
    .where("shells.org_id", "=", orgId);
}

/**
 * The two lookups of `findShell`, each compiled once (they run on every request that names a
 * shell): by id, then by the name of a live shell. A lookup by id is then one point read on the
 * primary key, about 15 % cheaper than one query matching either (which SQLite answers with a
 * multi-index OR and a sort); a lookup by name pays a second read.
 */
const shellById = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId" | "id">) =>
  selectShells(db, param("orgId")).where("shells.id", "=", param("id")),
);
const liveShellByName = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId" | "name">) =>
  selectShells(db, param("orgId"))
    .where("shells.name", "=", param("name"))
    .where("shells.deleted_at", "is", null),
);

/**
 * One of the org's shells by id (deleted ones too) or by the name of a live one. An exact id
 * always wins over a name (names cannot take an id's shape either).
 */
export async function findShell(
  db: Kysely<Database>,
  orgId: string,
  idOrName: string,
): Promise<ShellRow | undefined> {
  const [byId] = await shellById(db, { orgId, id: idOrName });
  if (byId) return byId;
  return (await liveShellByName(db, { orgId, name: idOrName }))[0];
}

/** A page of the org's shells, newest first, after the `(createdAt, id)` position `after`. */
export async function listShells(
  db: Kysely<Database>,
  orgId: string,
  filter: {
    status?: string;
    language?: string;
    runtime?: string;
    after?: { createdAt: string; id: string };
    limit: number;
  },
): Promise<ShellRow[]> {
  let q = selectShells(db, orgId);
  q = filter.status
    ? q.where("shells.status", "=", filter.status)
    : q.where("shells.status", "!=", "deleted");
  if (filter.language) q = q.where("shells.language", "=", filter.language);
  if (filter.runtime) q = q.where("shells.runtime", "=", filter.runtime);
  const after = filter.after;
  if (after) {
    q = q.where((eb) =>
      eb.or([
        eb("shells.created_at", "<", after.createdAt),
        eb.and([eb("shells.created_at", "=", after.createdAt), eb("shells.id", "<", after.id)]),
      ]),
    );
  }
  return q
    .orderBy("shells.created_at", "desc")
    .orderBy("shells.id", "desc")
    .limit(filter.limit)
    .execute();
}

/**
 * Inserts a new shell row (its `org_id` is the org's) and starts its meter in its first state.
 * Throws the store's unique violation on a taken name. `first`: writes made before the row in the
 * same transaction (the note of the shell on its create's idempotency key).
 */
export async function insertShell(
  db: Kysely<Database>,
  orgId: string,
  row: Omit<ShellTable, "org_id">,
  first?: (trx: Kysely<Database>) => Promise<void>,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await first?.(trx);
    await trx
      .insertInto("shells")
      .values({ ...row, org_id: orgId })
      .execute();
    await moveShellMeter(trx, row.id, row.status, Date.parse(row.created_at));
  });
}

/** Replaces one of the org's shells' egress allowlist (JSON of `ShellEgress`). */
export async function setShellEgress(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  egress: string,
): Promise<void> {
  await db
    .updateTable("shells")
    .set({ egress, updated_at: new Date().toISOString() })
    .where("org_id", "=", orgId)
    .where("id", "=", shellId)
    .execute();
}

/**
 * Records a lifecycle step on one of the org's shells. A new status moves the shell's meter in the
 * same transaction, so metered time follows the recorded state to the millisecond.
 */
export async function setShellState(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  fields: ShellStateFields,
): Promise<void> {
  const now = new Date();
  await db.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable("shells")
      .set({ ...fields, updated_at: now.toISOString() })
      .where("org_id", "=", orgId)
      .where("id", "=", shellId)
      .executeTakeFirst();
    if (fields.status && updated.numUpdatedRows > 0n)
      await moveShellMeter(trx, shellId, fields.status, now.getTime());
  });
}

/**
 * Sets the status reason of a shell still `provisioning` (its image build's progress); a shell
 * that has moved on (running, error, deleted) keeps its own.
 */
export async function setProvisioningReason(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  reason: string,
): Promise<void> {
  await db
    .updateTable("shells")
    .set({ status_reason: reason, updated_at: new Date().toISOString() })
    .where("org_id", "=", orgId)
    .where("id", "=", shellId)
    .where("status", "=", "provisioning")
    .execute();
}

/** The org's project named `name`. */
export async function findProject(
  db: Kysely<Database>,
  orgId: string,
  name: string,
): Promise<{ id: string; name: string } | undefined> {
  const [project] = await projectByName(db, { orgId, name });
  return project;
}

/** Every create reads its project by name. */
const projectByName = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId" | "name">) =>
  db
    .selectFrom("projects")
    .select(["id", "name"])
    .where("org_id", "=", param("orgId"))
    .where("name", "=", param("name")),
);

/** Every org's shells on `backend` that are not deleted (reconciliation after a start). */
export async function liveShellsOnBackendAcrossOrgs(
  db: Kysely<Database>,
  backend: string,
): Promise<Selectable<ShellTable>[]> {
  return db
    .selectFrom("shells")
    .selectAll()
    .where("backend", "=", backend)
    .where("status", "!=", "deleted")
    .execute();
}

/**
 * The memory limits of every org's shells that hold memory (provisioning, running or paused), MiB
 * in all: what the host has promised its shells. Every create asks. Such a shell is never deleted
 * (a delete sets its status and `deleted_at` together), so saying so changes nothing in the answer
 * and lets the store read the live shells' index instead of every shell ever made.
 */
export async function memoryHeldAcrossOrgs(db: Kysely<Database>): Promise<number> {
  const rows = await db
    .selectFrom("shells")
    .select("resources")
    .where("status", "in", ["provisioning", "running", "paused"])
    .where("deleted_at", "is", null)
    .execute();
  let total = 0;
  for (const row of rows) {
    const { memoryMb } = JSON.parse(row.resources) as { memoryMb?: unknown };
    if (typeof memoryMb === "number") total += memoryMb;
  }
  return total;
}

/** Every org's running (or paused) shells whose TTL passed by `now`. */
export async function expiredShellsAcrossOrgs(
  db: Kysely<Database>,
  now: string,
): Promise<{ id: string; org_id: string }[]> {
  return db
    .selectFrom("shells")
    .select(["id", "org_id"])
    .where("status", "in", ["running", "paused"])
    .where("expires_at", "is not", null)
    .where("expires_at", "<=", now)
    .execute();
}

/** Replaces the service bindings a shell holds (JSON of `{ id, name }[]`; null for none). */
export async function setShellBindings(
  db: Kysely<Database>,
  orgId: string,
  shellId: string,
  bindings: string | null,
): Promise<void> {
  await db
    .updateTable("shells")
    .set({ bindings, updated_at: new Date().toISOString() })
    .where("org_id", "=", orgId)
    .where("id", "=", shellId)
    .execute();
}
