import {
  sql,
  type ColumnDefinitionBuilder,
  type Kysely,
  type Migration,
  type MigrationProvider,
} from "kysely";
import { dialectOf, jsonText } from "./dialect.js";

/**
 * Column types that differ between the dialects, so each migration has one definition for both.
 * SQLite's INTEGER holds 64 bits; PostgreSQL's `integer` only 32, so integer columns (millisecond
 * times, byte and microsecond counts, money in micros) are BIGINT there. An auto-numbered key is
 * SQLite's `integer primary key autoincrement` and PostgreSQL's `bigserial`; bytes are BLOB and
 * BYTEA. On SQLite every migration compiles exactly as it did before PostgreSQL was supported.
 */
function columnTypes(db: Kysely<unknown>) {
  const postgres = dialectOf(db) === "postgres";
  return {
    integer: postgres ? "bigint" : "integer",
    serial: postgres ? "bigserial" : "integer",
    autoIncrement: (c: ColumnDefinitionBuilder) => (postgres ? c : c.autoIncrement()),
    blob: postgres ? "bytea" : "blob",
    /** SQLite stores a table with a composite key as its own index; PostgreSQL has no such option. */
    withoutRowid: postgres ? sql`` : sql` WITHOUT ROWID`,
  } as const;
}

/** Migrations, oldest first. Applied at start; never edit one that has shipped — add another. */
const MIGRATIONS: Record<string, Migration> = {
  "0001_foundation": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("orgs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("projects")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("projects_org_name", ["org_id", "name"])
        .execute();
      await db.schema
        .createTable("users")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("email", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("users_org_email", ["org_id", "email"])
        .execute();
      await db.schema
        .createTable("api_keys")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("principal_type", "text", (c) => c.notNull())
        .addColumn("principal_id", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("key_hash", "text", (c) => c.notNull())
        .addColumn("scopes", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("revoked_at", "text")
        .addColumn("last_used_at", "text")
        .execute();
      await db.schema
        .createTable("shells")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("status_reason", "text")
        .addColumn("language", "text", (c) => c.notNull())
        .addColumn("runtime", "text", (c) => c.notNull())
        .addColumn("network", "text", (c) => c.notNull())
        .addColumn("region", "text", (c) => c.notNull())
        .addColumn("resources", "text", (c) => c.notNull())
        .addColumn("env", "text", (c) => c.notNull())
        .addColumn("backend", "text", (c) => c.notNull())
        .addColumn("image_version", "text")
        .addColumn("ttl_seconds", t.integer)
        .addColumn("expires_at", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addColumn("deleted_at", "text")
        .execute();
      // Names are unique among an org's live shells; a deleted shell's name can be reused.
      await sql`CREATE UNIQUE INDEX shells_org_live_name ON shells (org_id, name) WHERE deleted_at IS NULL`.execute(
        db,
      );
      await db.schema
        .createIndex("shells_org_created")
        .on("shells")
        .columns(["org_id", "created_at", "id"])
        .execute();
      await db.schema
        .createTable("shell_logs")
        .addColumn("id", t.serial, (c) => t.autoIncrement(c.primaryKey()))
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("time", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("message", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("shell_logs_shell")
        .on("shell_logs")
        .columns(["shell_id", "id"])
        .execute();
      await db.schema
        .createTable("activity")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("seq", t.integer, (c) => c.notNull())
        .addColumn("actor", "text", (c) => c.notNull())
        .addColumn("actor_id", "text", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("target_type", "text")
        .addColumn("target_id", "text")
        .addColumn("outcome", "text", (c) => c.notNull())
        .addColumn("details", "text", (c) => c.notNull())
        .addColumn("time", "text", (c) => c.notNull())
        .addColumn("prev_hash", "text", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull())
        .addUniqueConstraint("activity_org_seq", ["org_id", "seq"])
        .execute();
      await db.schema
        .createIndex("activity_org_target")
        .on("activity")
        .columns(["org_id", "target_id", "seq"])
        .execute();
      await db.schema
        .createTable("idempotency_keys")
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("key", "text", (c) => c.notNull())
        .addColumn("request_hash", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("status_code", t.integer)
        .addColumn("response", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("idempotency_pk", ["org_id", "key"])
        .execute();
    },
  },
  "0002_iam": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable("users")
        .addColumn("source", "text", (c) => c.notNull().defaultTo("local"))
        .execute();
      await db.schema.alterTable("users").addColumn("oidc_subject", "text").execute();
      await db.schema.alterTable("users").addColumn("disabled_at", "text").execute();
      await sql`CREATE UNIQUE INDEX users_oidc_subject ON users (org_id, oidc_subject) WHERE oidc_subject IS NOT NULL`.execute(
        db,
      );
      await db.schema
        .createTable("agents")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("disabled_at", "text")
        .execute();
      await sql`CREATE UNIQUE INDEX agents_org_live_name ON agents (org_id, name) WHERE disabled_at IS NULL`.execute(
        db,
      );
      await db.schema
        .createTable("entitlements")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("entitlement", "text", (c) => c.notNull())
        .addColumn("principal_type", "text", (c) => c.notNull())
        .addColumn("principal_id", "text", (c) => c.notNull())
        .addColumn("granted_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("entitlements_unique", [
          "org_id",
          "entitlement",
          "principal_type",
          "principal_id",
        ])
        .execute();
      await db.schema
        .createTable("org_policies")
        .addColumn("org_id", "text", (c) => c.primaryKey().references("orgs.id"))
        .addColumn("policy", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("approvals")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("request", "text", (c) => c.notNull())
        .addColumn("requested_by_type", "text", (c) => c.notNull())
        .addColumn("requested_by_id", "text", (c) => c.notNull())
        .addColumn("requested_key_id", "text")
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("decided_by", "text")
        .addColumn("reason", "text")
        .addColumn("outcome", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .addColumn("decided_at", "text")
        .execute();
      await db.schema
        .createIndex("approvals_org_created")
        .on("approvals")
        .columns(["org_id", "created_at"])
        .execute();
      await db.schema
        .createTable("sessions")
        .addColumn("id_hash", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("user_id", "text", (c) => c.notNull())
        .addColumn("csrf_token", "text", (c) => c.notNull())
        .addColumn("claims", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0003_oidc": {
    async up(db: Kysely<unknown>) {
      // The IdP tokens a session re-checks the user's membership with, encrypted under a key derived
      // from the session cookie (which the store never holds), and when it last did.
      await db.schema.alterTable("sessions").addColumn("idp_tokens", "text").execute();
      await db.schema
        .alterTable("sessions")
        .addColumn("recheck", "text", (c) => c.notNull().defaultTo("none"))
        .execute();
      await db.schema.alterTable("sessions").addColumn("checked_at", "text").execute();
      await db.schema
        .createIndex("sessions_org_user")
        .on("sessions")
        .columns(["org_id", "user_id"])
        .execute();
      // Logins in flight: state, nonce and PKCE verifier, keyed by the hash of a browser cookie.
      await db.schema
        .createTable("oidc_logins")
        .addColumn("id_hash", "text", (c) => c.primaryKey())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("nonce", "text", (c) => c.notNull())
        .addColumn("code_verifier", "text", (c) => c.notNull())
        .addColumn("return_to", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
      // How fresh the directory evidence behind an OIDC user's role is, and whether the directory
      // (rather than an admin) disabled them.
      await db.schema
        .createTable("oidc_accounts")
        .addColumn("user_id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("synced_at", "text", (c) => c.notNull())
        .addColumn("offboarded_at", "text")
        .execute();
    },
  },
  "0004_term": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("term_credentials")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("token_hash", "text", (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .addColumn("used_at", "text")
        .execute();
    },
  },
  "0005_runs": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("runs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("language", "text", (c) => c.notNull())
        .addColumn("runtime", "text", (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("exit_code", t.integer)
        .addColumn("kill_reason", "text")
        .addColumn("result", "text")
        .addColumn("artifacts", "text", (c) => c.notNull())
        .addColumn("error", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("finished_at", "text")
        .execute();
      await db.schema
        .createIndex("runs_org_created")
        .on("runs")
        .columns(["org_id", "created_at"])
        .execute();
      await db.schema
        .createTable("run_frames")
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("seq", t.integer, (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("data", "text", (c) => c.notNull())
        .addColumn("time", t.integer, (c) => c.notNull())
        .addPrimaryKeyConstraint("run_frames_pk", ["run_id", "seq"])
        .execute();
    },
  },
  /**
   * Who minted each API key and who created each agent: separation of duties needs to know who
   * controls a credential or an agent. Existing rows are filled from the activity history, where
   * every key and agent creation was recorded; a key with no such record (the bootstrap key) was
   * its holder's own.
   */
  "0006_credential_creators": {
    async up(db: Kysely<unknown>) {
      for (const table of ["api_keys", "agents"]) {
        await db.schema.alterTable(table).addColumn("created_by_type", "text").execute();
        await db.schema.alterTable(table).addColumn("created_by_id", "text").execute();
      }
      for (const [table, action, target] of [
        ["api_keys", "iam.key.create", "api_key"],
        ["agents", "iam.agent.create", "agent"],
      ] as const) {
        const creation = sql`FROM activity WHERE activity.action = ${action} AND activity.target_type = ${target} AND activity.target_id = ${sql.table(table)}.id AND activity.outcome = 'success' ORDER BY activity.seq LIMIT 1`;
        await sql`UPDATE ${sql.table(table)} SET created_by_type = (SELECT ${jsonText(db, sql`activity.actor`, "type")} ${creation}), created_by_id = (SELECT activity.actor_id ${creation})`.execute(
          db,
        );
      }
      await sql`UPDATE api_keys SET created_by_type = principal_type, created_by_id = principal_id WHERE created_by_id IS NULL`.execute(
        db,
      );
    },
  },
  "0007_term_minting_key": {
    async up(db: Kysely<unknown>) {
      // The API key that minted a terminal credential: revoking it ends the credential and any
      // terminal attached with it. Null for credentials minted by a console session or a JWT.
      await db.schema
        .alterTable("term_credentials")
        .addColumn("created_by_key_id", "text")
        .execute();
    },
  },
  "0008_shell_secrets_and_snapshots": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema.alterTable("shells").addColumn("secret_env", "text").execute();
      await db.schema
        .createTable("snapshots")
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("size_bytes", t.integer, (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("snapshots_pk", ["shell_id", "name"])
        .execute();
      await db.schema.createIndex("snapshots_org").on("snapshots").column("org_id").execute();
    },
  },
  /** Finished idempotency keys are pruned by age, per org: an index keeps that cheap. */
  "0009_idempotency_key_age": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createIndex("idempotency_keys_age")
        .on("idempotency_keys")
        .columns(["org_id", "created_at"])
        .execute();
    },
  },
  /** An `internet` shell's own egress allowlist (JSON of ShellEgress), when it has one. */
  "0010_shell_egress": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("shells").addColumn("egress", "text").execute();
    },
  },
  /** The end of a run's output (JSON of RunOutput), kept once the run ends. */
  "0011_run_output_tail": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("runs").addColumn("output_tail", "text").execute();
    },
  },
  /**
   * Service bindings: the org's secret store (values sealed), and each shell's grants (JSON of
   * `{ id, name }[]`, null when it has none).
   */
  "0012_service_bindings": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("bindings")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("upstream", "text", (c) => c.notNull())
        .addColumn("inject", "text", (c) => c.notNull())
        .addColumn("paths", "text", (c) => c.notNull())
        .addColumn("methods", "text", (c) => c.notNull())
        .addColumn("secret", "text", (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("rotated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("bindings_org_name", ["org_id", "name"])
        .execute();
      await db.schema.alterTable("shells").addColumn("bindings", "text").execute();
    },
  },
  /**
   * Webhook endpoints (signing secrets sealed) and their deliveries: the outbox the dispatcher
   * sends from and each endpoint's delivery log. A delivery row is written in the transaction of
   * the activity event it is made from, so none is lost to a crash.
   */
  "0013_webhooks": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("webhooks")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("url", "text", (c) => c.notNull())
        .addColumn("description", "text")
        .addColumn("events", "text", (c) => c.notNull())
        .addColumn("secret", "text", (c) => c.notNull())
        .addColumn("previous_secret", "text")
        .addColumn("previous_secret_expires_at", "text")
        .addColumn("secret_rotated_at", "text")
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("webhooks_org").on("webhooks").column("org_id").execute();
      await db.schema
        .createTable("webhook_deliveries")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("webhook_id", "text", (c) =>
          c.notNull().references("webhooks.id").onDelete("cascade"),
        )
        .addColumn("message_id", "text", (c) => c.notNull())
        .addColumn("event_type", "text", (c) => c.notNull())
        .addColumn("activity_id", "text", (c) => c.notNull())
        .addColumn("payload", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("attempts", t.integer, (c) => c.notNull())
        .addColumn("next_attempt_at", "text")
        .addColumn("last_attempt_at", "text")
        .addColumn("last_status", t.integer)
        .addColumn("last_error", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("delivered_at", "text")
        .addColumn("redelivery_of", "text")
        .execute();
      await db.schema
        .createIndex("webhook_deliveries_due")
        .on("webhook_deliveries")
        .columns(["state", "next_attempt_at"])
        .execute();
      await db.schema
        .createIndex("webhook_deliveries_log")
        .on("webhook_deliveries")
        .columns(["webhook_id", "created_at", "id"])
        .execute();
    },
  },
  /**
   * Metering: one row per stretch of time a shell spent in one state (within one UTC hour, under
   * one rate card), the org's rate cards, project caps and the cap alerts already raised. Shells
   * get their creator, backfilled from the history, for usage by actor.
   */
  "0014_metering": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema.alterTable("shells").addColumn("created_by_type", "text").execute();
      await db.schema.alterTable("shells").addColumn("created_by_id", "text").execute();
      const creation = sql`FROM activity WHERE activity.action = 'shell.create' AND activity.target_type = 'shell' AND activity.target_id = shells.id ORDER BY activity.seq LIMIT 1`;
      await sql`UPDATE shells SET created_by_type = (SELECT ${jsonText(db, sql`activity.actor`, "type")} ${creation}), created_by_id = (SELECT activity.actor_id ${creation})`.execute(
        db,
      );
      await db.schema
        .createTable("usage_rates")
        .addColumn("id", t.serial, (c) => t.autoIncrement(c.primaryKey()))
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("rates", "text", (c) => c.notNull())
        .addColumn("effective_at_ms", t.integer, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("usage_rates_org")
        .on("usage_rates")
        .columns(["org_id", "id"])
        .execute();
      await db.schema
        .createTable("usage_intervals")
        .addColumn("id", t.serial, (c) => t.autoIncrement(c.primaryKey()))
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("project_id", "text", (c) => c.notNull())
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("runtime", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("actor_id", "text")
        .addColumn("rates_id", t.integer)
        .addColumn("started_at_ms", t.integer, (c) => c.notNull())
        .addColumn("ended_at_ms", t.integer)
        .addColumn("checkpoint_ms", t.integer, (c) => c.notNull())
        .addColumn("cpu_usec", t.integer, (c) => c.notNull().defaultTo(0))
        .addColumn("memory_mb_ms", t.integer, (c) => c.notNull().defaultTo(0))
        .addColumn("egress_bytes", t.integer, (c) => c.notNull().defaultTo(0))
        .addColumn("cpu_epoch", "text")
        .addColumn("cpu_mark_usec", t.integer)
        .execute();
      // At most one open interval per shell: time can never be counted twice.
      await sql`CREATE UNIQUE INDEX usage_intervals_open ON usage_intervals (shell_id) WHERE ended_at_ms IS NULL`.execute(
        db,
      );
      await db.schema
        .createIndex("usage_intervals_org_time")
        .on("usage_intervals")
        .columns(["org_id", "started_at_ms"])
        .execute();
      await db.schema
        .createIndex("usage_intervals_project_time")
        .on("usage_intervals")
        .columns(["project_id", "started_at_ms"])
        .execute();
      await db.schema
        .createTable("project_caps")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id"))
        .addColumn("metric", "text", (c) => c.notNull())
        .addColumn("period", "text")
        .addColumn("runtime", "text")
        .addColumn("limit_value", t.integer, (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("project_caps_org").on("project_caps").column("org_id").execute();
      await db.schema
        .createTable("cap_alerts")
        .addColumn("cap_id", "text", (c) => c.notNull())
        .addColumn("period_start_ms", t.integer, (c) => c.notNull())
        .addColumn("level", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("cap_alerts_pk", ["cap_id", "period_start_ms", "level"])
        .execute();
    },
  },
  /** How a shell is isolated when its backend says (`microvm (kvm)`, `microvm (emulated)`). */
  "0015_shell_isolation": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("shells").addColumn("isolation", "text").execute();
    },
  },
  /**
   * Signed checkpoints of the activity history. `activity_tree` holds every complete, aligned
   * subtree of each org's RFC 6962 tree (level 0 = the leaf hash recorded with each event), so
   * roots and proofs are a few indexed lookups; rows are only ever added.
   */
  "0016_activity_checkpoints": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await sql`CREATE TABLE activity_tree (
        org_id TEXT NOT NULL,
        level INTEGER NOT NULL,
        idx ${sql.raw(t.integer.toUpperCase())} NOT NULL,
        hash ${sql.raw(t.blob.toUpperCase())} NOT NULL,
        PRIMARY KEY (org_id, level, idx)
      )${t.withoutRowid}`.execute(db);
      await db.schema
        .createTable("audit_checkpoints")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("tree_size", t.integer, (c) => c.notNull())
        .addColumn("root_hash", "text", (c) => c.notNull())
        .addColumn("time", "text", (c) => c.notNull())
        .addColumn("key_id", "text", (c) => c.notNull())
        .addColumn("signature", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("audit_checkpoints_org_size")
        .on("audit_checkpoints")
        .columns(["org_id", "tree_size", "time"])
        .execute();
    },
  },
  /** What a run changed in /workspace (JSON of WorkspaceChanges), once it ended. */
  "0017_run_workspace_changes": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("runs").addColumn("workspace_changes", "text").execute();
    },
  },
  /** URLs of exposed ports: the token's hash, the shell and port it reaches, who made it, until when. */
  "0018_port_urls": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("port_urls")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("shell_id", "text", (c) => c.notNull())
        .addColumn("port", t.integer, (c) => c.notNull())
        .addColumn("token_hash", "text", (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_by_key_id", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("port_urls_shell").on("port_urls").column("shell_id").execute();
    },
  },
  /**
   * Templates and their immutable versions; the template (name@version) a shell or run was made
   * from; the request of a run that waits for review; the context an approval carries.
   */
  "0019_templates": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("templates")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("project_id", "text")
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("latest_version", t.integer, (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("templates_org_name", ["org_id", "name"])
        .execute();
      await db.schema
        .createTable("template_versions")
        .addColumn("template_id", "text", (c) => c.notNull().references("templates.id"))
        .addColumn("version", t.integer, (c) => c.notNull())
        .addColumn("definition", "text", (c) => c.notNull())
        .addColumn("sha256", "text", (c) => c.notNull())
        .addColumn("created_by_type", "text", (c) => c.notNull())
        .addColumn("created_by_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("template_versions_pk", ["template_id", "version"])
        .execute();
      await db.schema.alterTable("shells").addColumn("template", "text").execute();
      await db.schema.alterTable("runs").addColumn("template", "text").execute();
      await db.schema.alterTable("runs").addColumn("pending_request", "text").execute();
      await db.schema.alterTable("approvals").addColumn("context", "text").execute();
    },
  },
  /**
   * Egress rules below the org's policy: a project's (one row per project that has any), and the
   * rules of the template version a shell was made from, kept with the shell (JSON of EgressRules).
   */
  "0020_egress_rule_levels": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("project_egress_rules")
        .addColumn("project_id", "text", (c) => c.primaryKey().references("projects.id"))
        .addColumn("org_id", "text", (c) => c.notNull().references("orgs.id"))
        .addColumn("rules", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addColumn("updated_by_type", "text", (c) => c.notNull())
        .addColumn("updated_by_id", "text", (c) => c.notNull())
        .execute();
      await db.schema.alterTable("shells").addColumn("egress_rules", "text").execute();
    },
  },
  /**
   * Crash consistency. An idempotency key records which control-plane process runs its request
   * (`owner`, a boot id) and until when that process vouches for it (`lease_expires_at`, renewed
   * while it runs), the operation, the first request's id, and what the request made before it
   * made it (`effects`): a key whose process died is resolved at the next start instead of staying
   * `pending`. A shell records a delete that began (`delete_requested_by`), so a delete cut by a
   * crash is finished at the next start.
   */
  "0021_crash_consistency": {
    async up(db: Kysely<unknown>) {
      for (const column of ["owner", "lease_expires_at", "operation", "request_id", "effects"])
        await db.schema.alterTable("idempotency_keys").addColumn(column, "text").execute();
      await db.schema.alterTable("shells").addColumn("delete_requested_by", "text").execute();
    },
  },
  /**
   * The order a project's caps were given in, kept as a column: SQLite's implicit rowid kept it
   * until now, and PostgreSQL has no such thing. Existing SQLite rows keep their rowid's order.
   */
  "0022_cap_order": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema.alterTable("project_caps").addColumn("position", t.integer).execute();
      // Only a SQLite store can hold caps set before this column existed.
      if (dialectOf(db) === "sqlite")
        await sql`UPDATE project_caps SET position = rowid`.execute(db);
    },
  },
  /**
   * Leases electing one server, of several over one store, to run the background work (the
   * reconciler, the TTL sweep, metering, cap sweeps, webhook delivery, checkpoint signing): the
   * holder renews its row before `expires_at_ms`; once it lapses another server takes it.
   */
  "0023_leases": {
    async up(db: Kysely<unknown>) {
      const t = columnTypes(db);
      await db.schema
        .createTable("leases")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("holder", "text", (c) => c.notNull())
        .addColumn("acquired_at_ms", t.integer, (c) => c.notNull())
        .addColumn("expires_at_ms", t.integer, (c) => c.notNull())
        .execute();
    },
  },
  /**
   * Retention of what runs keep: `runs.expired_at` marks a run whose artifacts, workspace changes
   * and diff the sweeper removed; `run_retention` holds the days set per org (`project_id` '') and
   * per project.
   */
  "0024_run_retention": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("runs").addColumn("expired_at", "text").execute();
      await db.schema
        .createIndex("runs_unexpired_finished")
        .on("runs")
        .columns(["expired_at", "finished_at"])
        .execute();
      await db.schema
        .createTable("run_retention")
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("project_id", "text", (c) => c.notNull())
        .addColumn("days", "double precision", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addColumn("updated_by_type", "text", (c) => c.notNull())
        .addColumn("updated_by_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("run_retention_pk", ["org_id", "project_id"])
        .execute();
    },
  },
  /** A port URL revoked before its expiry: when, and by whom (null while it stands). */
  "0025_port_url_revocation": {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("port_urls").addColumn("revoked_at", "text").execute();
      await db.schema.alterTable("port_urls").addColumn("revoked_by_type", "text").execute();
      await db.schema.alterTable("port_urls").addColumn("revoked_by_id", "text").execute();
    },
  },
  "0026_api_key_expiry": {
    async up(db: Kysely<unknown>) {
      // When an API key stops working (ISO time), or null for a key that lasts until revoked.
      await db.schema.alterTable("api_keys").addColumn("expires_at", "text").execute();
    },
  },
  /** Reviewers' verdicts on finished runs (`POST /runs/:id/review`), newest read per run. */
  "0027_run_reviews": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("run_reviews")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("org_id", "text", (c) => c.notNull())
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("verdict", "text", (c) => c.notNull())
        .addColumn("comment", "text", (c) => c.notNull())
        .addColumn("reviewed_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("run_reviews_by_run")
        .on("run_reviews")
        .columns(["org_id", "run_id", "created_at"])
        .execute();
    },
  },
};

/** Serves the migrations above to Kysely's Migrator. */
export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return MIGRATIONS;
  },
};
