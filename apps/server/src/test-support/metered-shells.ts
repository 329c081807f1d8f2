import type { Store } from "../store/database.js";
import { moveShellMeter } from "../store/usage-store.js";

/**
 * Shell rows moved through their lifecycle at chosen times, for tests of metering that need a
 * clock they control: each change is recorded as `setShellState` records one, at `atMs`.
 */

/** Inserts org `org1` with project `default` (`prj1`). */
export async function seedMeteredOrg(store: Store, atMs: number): Promise<void> {
  const at = new Date(atMs).toISOString();
  await store.db.insertInto("orgs").values({ id: "org1", name: "org1", created_at: at }).execute();
  await store.db
    .insertInto("projects")
    .values({ id: "prj1", org_id: "org1", name: "default", created_at: at })
    .execute();
}

/** A `provisioning` shell of `org1`, its meter started at `atMs` (as `insertShell` starts it). */
export async function addMeteredShell(
  store: Store,
  id: string,
  atMs: number,
  options: { runtime?: string; backend?: string } = {},
): Promise<void> {
  const at = new Date(atMs).toISOString();
  await store.db
    .insertInto("shells")
    .values({
      id,
      org_id: "org1",
      project_id: "prj1",
      name: id,
      status: "provisioning",
      status_reason: null,
      language: "bash",
      runtime: options.runtime ?? "container",
      network: "sealed",
      region: "local",
      resources: "{}",
      env: "{}",
      backend: options.backend ?? "simulator",
      secret_env: null,
      egress: null,
      image_version: null,
      ttl_seconds: null,
      expires_at: null,
      created_at: at,
      updated_at: at,
      deleted_at: null,
      created_by_type: "user",
      created_by_id: "usr-1",
    })
    .execute();
  await store.db.transaction().execute((trx) => moveShellMeter(trx, id, "provisioning", atMs));
}

/** A state change of a shell at `atMs`. */
export async function moveMeteredShell(
  store: Store,
  id: string,
  status: string,
  atMs: number,
): Promise<void> {
  await store.db.transaction().execute(async (trx) => {
    await trx.updateTable("shells").set({ status }).where("id", "=", id).execute();
    await moveShellMeter(trx, id, status, atMs);
  });
}
