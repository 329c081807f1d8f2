import { Scope } from "@shells/contract";
import type { Kysely } from "kysely";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { newId, nowIso } from "../ids.js";
import { lockForTransaction } from "../store/dialect.js";
import type { Database } from "../store/schema.js";
import { mintApiKey } from "./tokens.js";

/** What the first start of the local profile made. */
export interface BootstrapResult {
  orgId: string;
  tokenPath: string;
}

/**
 * On the first start of the local profile (no org yet): creates org `default`, project `default`,
 * an owner and an owner API key, and writes the key to `<dataDir>/admin-token` (mode 0600).
 * Returns null when the store already has an org.
 */
export async function bootstrapLocalOrg(
  db: Kysely<Database>,
  dataDir: string,
): Promise<BootstrapResult | null> {
  const now = nowIso();
  const orgId = newId("org");
  const userId = newId("usr");
  const key = mintApiKey();
  // Replicas starting together over one store: one of them bootstraps, the others find its org.
  const made = await db.transaction().execute(async (trx) => {
    await lockForTransaction(trx, "bootstrap");
    const existing = await trx.selectFrom("orgs").select("id").limit(1).executeTakeFirst();
    if (existing) return false;
    await trx.insertInto("orgs").values({ id: orgId, name: "default", created_at: now }).execute();
    await trx
      .insertInto("projects")
      .values({ id: newId("prj"), org_id: orgId, name: "default", created_at: now })
      .execute();
    await trx
      .insertInto("users")
      .values({
        id: userId,
        org_id: orgId,
        email: "owner@localhost",
        role: "owner",
        created_at: now,
      })
      .execute();
    await trx
      .insertInto("api_keys")
      .values({
        id: key.keyId,
        org_id: orgId,
        principal_type: "user",
        principal_id: userId,
        name: "bootstrap admin key",
        key_hash: key.keyHash,
        scopes: JSON.stringify(Scope.options),
        created_at: now,
        revoked_at: null,
        last_used_at: null,
        created_by_type: "user",
        created_by_id: userId,
      })
      .execute();
    return true;
  });
  if (!made) return null;
  const tokenPath = join(dataDir, "admin-token");
  writeFileSync(tokenPath, `${key.token}\n`, { mode: 0o600 });
  chmodSync(tokenPath, 0o600);
  return { orgId, tokenPath };
}
