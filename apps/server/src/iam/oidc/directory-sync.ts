import type { Role } from "@shells/contract";
import type { Kysely, Transaction } from "kysely";
import type { OidcConfig } from "../../config.js";
import { newId, nowIso } from "../../ids.js";
import type { ActivityInput, ActivityService } from "../../services/activity-service.js";
import { lockForTransaction } from "../../store/dialect.js";
import type { Database } from "../../store/schema.js";
import { roleFromClaims, type Claims } from "./role-mapping.js";

/** What the directory said about a user, and when. */
export interface DirectoryEvidence {
  subject: string;
  claims: Claims;
  /**
   * When the issuer made this statement (ISO time): now for a login, userinfo or refresh answer;
   * the token's `iat` for a bearer JWT. Older evidence never overrides newer evidence.
   */
  at: string;
}

/** The outcome of applying evidence: a member with a role, or a refusal with a loggable reason. */
export type Admission =
  | { admitted: true; orgId: string; userId: string; role: Role }
  | { admitted: false; orgId: string | null; userId: string | null; reason: string };

const DIRECTORY_ACTOR = { type: "system", id: "oidc-directory" } as const;

/**
 * Keeps OIDC users in step with the directory. Each login, userinfo re-check or bearer JWT is
 * evidence: a mapped role creates or updates the user (`source: oidc`, keyed by the `sub` claim);
 * no mapped role offboards an existing user — disabled, API keys revoked, sessions ended — so they
 * are refused at their next request by every door. Evidence older than what was last applied
 * (a bearer JWT minted before the directory changed) can neither restore nor change a user.
 */
export class DirectorySync {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly settings: Pick<OidcConfig, "org" | "roleClaim" | "roleMap">,
  ) {}

  /** The role the claims map to, or null. */
  roleOf(claims: Claims): Role | null {
    return roleFromClaims(claims, this.settings.roleClaim, this.settings.roleMap);
  }

  /** The id of the org OIDC users belong to, when it exists. */
  async orgId(db: Kysely<Database> = this.db): Promise<string | null> {
    const org = await db
      .selectFrom("orgs")
      .select("id")
      .where("name", "=", this.settings.org)
      .executeTakeFirst();
    return org?.id ?? null;
  }

  /** Applies evidence about one user and says whether they may act, and as what. */
  async apply(evidence: DirectoryEvidence): Promise<Admission> {
    const role = this.roleOf(evidence.claims);
    const events: ActivityInput[] = [];
    const admission = await this.db.transaction().execute(async (trx) => {
      // Inside the transaction, every query goes through `trx` (a SQLite store has one
      // connection). Two logins of one subject, on any server, apply their evidence in turn.
      await lockForTransaction(trx, `oidc-subject:${evidence.subject}`);
      const orgId = role ? await this.#ensureOrg(trx) : await this.orgId(trx);
      if (!orgId) return refused(null, null, "the directory maps the user to no Shells role");
      const user = await trx
        .selectFrom("users")
        .selectAll()
        .where("org_id", "=", orgId)
        .where("oidc_subject", "=", evidence.subject)
        .executeTakeFirst();
      if (!user) {
        if (!role) return refused(orgId, null, "the directory maps the user to no Shells role");
        return this.#create(trx, orgId, evidence, role, events);
      }
      const account = await trx
        .selectFrom("oidc_accounts")
        .selectAll()
        .where("user_id", "=", user.id)
        .executeTakeFirst();
      const fresh = !account || evidence.at >= account.synced_at;
      const offboardedByDirectory =
        user.disabled_at !== null && account?.offboarded_at === user.disabled_at;
      if (!role) {
        if (fresh && user.disabled_at === null) {
          await this.#offboard(trx, orgId, user.id, evidence.at);
          events.push({
            orgId,
            actor: DIRECTORY_ACTOR,
            action: "iam.member.offboard",
            target: { type: "user", id: user.id },
            outcome: "success",
            details: { reason: "the directory maps the user to no Shells role" },
          });
        }
        return refused(orgId, user.id, "the directory maps the user to no Shells role");
      }
      if (!fresh) {
        // A token older than the last directory change: the user stays as that change left them.
        if (user.disabled_at) return refused(orgId, user.id, "the member is disabled");
        return { admitted: true, orgId, userId: user.id, role: user.role } as const;
      }
      if (user.disabled_at && !offboardedByDirectory)
        return refused(orgId, user.id, "the member was disabled by an admin");
      await trx
        .updateTable("users")
        .set({ role, disabled_at: null })
        .where("id", "=", user.id)
        .execute();
      await upsertAccount(trx, orgId, user.id, evidence.at, null);
      if (user.role !== role || user.disabled_at) {
        events.push({
          orgId,
          actor: DIRECTORY_ACTOR,
          action: "iam.member.update",
          target: { type: "user", id: user.id },
          outcome: "success",
          details: {
            role,
            previousRole: user.role,
            ...(user.disabled_at ? { reenabled: true } : {}),
          },
        });
      }
      return { admitted: true, orgId, userId: user.id, role } as const;
    });
    for (const event of events) await this.activity.record(event);
    return admission;
  }

  /** The org OIDC users land in, created (with project `default`) on first use. */
  async #ensureOrg(trx: Transaction<Database>): Promise<string> {
    const existing = await this.orgId(trx);
    if (existing) return existing;
    const orgId = newId("org");
    const now = nowIso();
    await trx
      .insertInto("orgs")
      .values({ id: orgId, name: this.settings.org, created_at: now })
      .execute();
    await trx
      .insertInto("projects")
      .values({ id: newId("prj"), org_id: orgId, name: "default", created_at: now })
      .execute();
    return orgId;
  }

  async #create(
    trx: Transaction<Database>,
    orgId: string,
    evidence: DirectoryEvidence,
    role: Role,
    events: ActivityInput[],
  ): Promise<Admission> {
    const claimedEmail = evidence.claims.email;
    const email =
      typeof claimedEmail === "string" && claimedEmail.length <= 254
        ? claimedEmail.toLowerCase()
        : `oidc:${evidence.subject}`;
    const taken = await trx
      .selectFrom("users")
      .select("id")
      .where("org_id", "=", orgId)
      .where("email", "=", email)
      .executeTakeFirst();
    // Never merge into an existing member by email: that member's access is theirs, not the IdP's.
    if (taken) return refused(orgId, null, "another member of the org already has this email");
    const userId = newId("usr");
    await trx
      .insertInto("users")
      .values({
        id: userId,
        org_id: orgId,
        email,
        role,
        created_at: nowIso(),
        source: "oidc",
        oidc_subject: evidence.subject,
        disabled_at: null,
      })
      .execute();
    await upsertAccount(trx, orgId, userId, evidence.at, null);
    events.push({
      orgId,
      actor: DIRECTORY_ACTOR,
      action: "iam.member.create",
      target: { type: "user", id: userId },
      outcome: "success",
      details: { email, role, source: "oidc" },
    });
    return { admitted: true, orgId, userId, role };
  }

  /** Disables a user the directory dropped: revokes their API keys and ends their sessions. */
  async #offboard(trx: Transaction<Database>, orgId: string, userId: string, at: string) {
    const now = nowIso();
    await trx.updateTable("users").set({ disabled_at: now }).where("id", "=", userId).execute();
    await trx
      .updateTable("api_keys")
      .set({ revoked_at: now })
      .where("org_id", "=", orgId)
      .where("principal_type", "=", "user")
      .where("principal_id", "=", userId)
      .where("revoked_at", "is", null)
      .execute();
    await trx
      .deleteFrom("sessions")
      .where("org_id", "=", orgId)
      .where("user_id", "=", userId)
      .execute();
    await upsertAccount(trx, orgId, userId, at, now);
  }
}

function refused(orgId: string | null, userId: string | null, reason: string): Admission {
  return { admitted: false, orgId, userId, reason };
}

async function upsertAccount(
  trx: Transaction<Database>,
  orgId: string,
  userId: string,
  syncedAt: string,
  offboardedAt: string | null,
): Promise<void> {
  await trx
    .insertInto("oidc_accounts")
    .values({ user_id: userId, org_id: orgId, synced_at: syncedAt, offboarded_at: offboardedAt })
    .onConflict((oc) =>
      oc.column("user_id").doUpdateSet({ synced_at: syncedAt, offboarded_at: offboardedAt }),
    )
    .execute();
}
