import { ApiKeyCreate, ROLE_SCOPES, Scope, type Role } from "@shells/contract";
import type { Kysely } from "kysely";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadConfig, type ServerConfig } from "../config.js";
import { nowIso } from "../ids.js";
import { ActivityService } from "../services/activity-service.js";
import { openStore, redactDatabaseUrl } from "../store/database.js";
import type { Database } from "../store/schema.js";
import { mintApiKey } from "./tokens.js";

/**
 * The operator's path to a member's first key: whoever runs the server on the host already holds
 * its data dir (the store and the owner's key), so a command run there may issue a key for a
 * member — one the member then holds, with scopes within their role. There is no API door for
 * this: through the API a key is minted only for its caller, or by an admin for an agent, so no
 * remote caller can mint a credential that acts as another person.
 */

/** The actor recorded for what the host's operator does through the store. */
export const OPERATOR_ACTOR = { type: "system", id: "operator" } as const;

/** A refusal of the operator command: a wrong email, org, scope or state; its message says which. */
export class OperatorKeyError extends Error {
  override readonly name = "OperatorKeyError";
}

/** What the operator asks for. */
export interface IssueMemberKeyOptions {
  /** The member's email (case-insensitive). */
  email: string;
  /** Name of the org; needed only when the store holds more than one. */
  org?: string;
  /** Scopes of the key; default: every scope the member's role allows. */
  scopes?: readonly string[];
  /** Name of the key (default `first key`). */
  name?: string;
}

/** A key issued by the operator: its token is shown once and only its hash is stored. */
export interface IssuedMemberKey {
  keyId: string;
  token: string;
  orgId: string;
  memberId: string;
  email: string;
  role: Role;
  scopes: Scope[];
  name: string;
}

/**
 * Issues an API key held by an active member of an org, recorded as created by the member, with an
 * `iam.key.create` event whose actor is the operator. Refuses an unknown or disabled (removed)
 * member, an unknown scope and a scope beyond the member's role.
 */
export async function issueMemberKey(
  db: Kysely<Database>,
  options: IssueMemberKeyOptions,
): Promise<IssuedMemberKey> {
  const orgId = await resolveOrg(db, options.org);
  const email = options.email.trim().toLowerCase();
  const member = await db
    .selectFrom("users")
    .select(["id", "role", "disabled_at"])
    .where("org_id", "=", orgId)
    .where("email", "=", email)
    .executeTakeFirst();
  if (!member) throw new OperatorKeyError(`no member ${email} in this org`);
  if (member.disabled_at) {
    throw new OperatorKeyError(`${email} is disabled or removed; enable them first`);
  }
  const allowed = ROLE_SCOPES[member.role];
  const asked = options.scopes ?? Scope.options.filter((s) => allowed.includes(s));
  const unknown = asked.filter((s) => !Scope.safeParse(s).success);
  if (unknown.length > 0) {
    throw new OperatorKeyError(
      `unknown scope ${unknown.join(", ")} (scopes: ${Scope.options.join(", ")})`,
    );
  }
  const scopes = [...new Set(asked as Scope[])];
  const beyondRole = scopes.filter((s) => !allowed.includes(s));
  if (beyondRole.length > 0) {
    throw new OperatorKeyError(`a ${member.role} cannot hold ${beyondRole.join(", ")}`);
  }
  const body = ApiKeyCreate.safeParse({ name: options.name ?? "first key", scopes });
  if (!body.success) {
    throw new OperatorKeyError(
      `invalid key: ${body.error.issues.map((i) => i.message).join("; ")}`,
    );
  }
  const principal = { type: "user" as const, id: member.id };
  const minted = mintApiKey();
  await db
    .insertInto("api_keys")
    .values({
      id: minted.keyId,
      org_id: orgId,
      principal_type: principal.type,
      principal_id: principal.id,
      name: body.data.name,
      key_hash: minted.keyHash,
      scopes: JSON.stringify(scopes),
      created_at: nowIso(),
      revoked_at: null,
      last_used_at: null,
      created_by_type: principal.type,
      created_by_id: principal.id,
    })
    .execute();
  try {
    await whileBusy(() =>
      new ActivityService(db).record({
        orgId,
        actor: OPERATOR_ACTOR,
        action: "iam.key.create",
        target: { type: "api_key", id: minted.keyId },
        outcome: "success",
        details: { name: body.data.name, principal, scopes },
      }),
    );
  } catch (error) {
    // A key nobody was told about must not stay usable: without its event, take it back.
    await db.deleteFrom("api_keys").where("id", "=", minted.keyId).execute();
    throw error;
  }
  return {
    keyId: minted.keyId,
    token: minted.token,
    orgId,
    memberId: member.id,
    email,
    role: member.role,
    scopes,
    name: body.data.name,
  };
}

/**
 * Runs `write` again while SQLite answers busy. This command is a second process beside a running
 * server: the event's transaction reads the chain's head and then writes, and SQLite refuses that
 * upgrade at once (no busy wait) when the server committed in between. The transaction was rolled
 * back, so running it again is safe.
 */
async function whileBusy<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (attempt >= 50 || typeof code !== "string" || !code.startsWith("SQLITE_BUSY")) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
    }
  }
}

/** The org named `name`, or the only org when no name is given. */
async function resolveOrg(db: Kysely<Database>, name: string | undefined): Promise<string> {
  const orgs = await db.selectFrom("orgs").select(["id", "name"]).orderBy("created_at").execute();
  if (name !== undefined) {
    const org = orgs.find((o) => o.name === name);
    if (!org) throw new OperatorKeyError(`no org named ${name}`);
    return org.id;
  }
  const [only, ...others] = orgs;
  if (!only) throw new OperatorKeyError("the store has no org yet: start the server once first");
  if (others.length > 0) {
    throw new OperatorKeyError(
      `the store has several orgs; name one with --org (${orgs.map((o) => o.name).join(", ")})`,
    );
  }
  return only.id;
}

const parseIssueKeyArgs = (argv: string[]) =>
  parseArgs({
    args: argv,
    options: {
      email: { type: "string" },
      scope: { type: "string", multiple: true },
      name: { type: "string" },
      org: { type: "string" },
      "data-dir": { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  }).values;

const USAGE =
  "usage: server issue-key --email <member email> [--scope <scope> …] [--name <key name>] [--org <org name>] [--data-dir <dir>]";

/**
 * `server issue-key`: issues a member's key from the host, over the store in the data dir (flag
 * `--data-dir`, env `SHELLS_DATA_DIR`, default `./.shells`, as the server resolves it). Works
 * while the server runs (the store is SQLite in WAL mode; a second connection waits for the write
 * lock). Prints the token, and only the token, on stdout; says what it issued on stderr. Returns
 * the exit code: 0 issued, 1 refused or failed, 2 usage.
 */
export async function runIssueKeyCommand(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const fail = (code: number, message: string) => {
    process.stderr.write(`shells server issue-key: ${message}\n`);
    return code;
  };
  let values: ReturnType<typeof parseIssueKeyArgs>;
  try {
    values = parseIssueKeyArgs(argv);
  } catch (error) {
    return fail(2, `${(error as Error).message}\n${USAGE}`);
  }
  if (!values.email) return fail(2, `--email is required\n${USAGE}`);
  let config: ServerConfig;
  try {
    config = loadConfig(values["data-dir"] ? ["--data-dir", values["data-dir"]] : [], env);
  } catch (error) {
    return fail(1, (error as Error).message);
  }
  const where = config.databaseUrl
    ? redactDatabaseUrl(config.databaseUrl)
    : join(config.dataDir, "shells.db");
  // Opening would create an empty store: a wrong data dir must be an error, not a new instance.
  if (!config.databaseUrl && !existsSync(where)) {
    return fail(1, `no store at ${where}: start the server once, or pass --data-dir`);
  }
  let store;
  try {
    store = await openStore(config);
  } catch (error) {
    return fail(1, `cannot open ${where}: ${(error as Error).message}`);
  }
  try {
    const issued = await issueMemberKey(store.db, {
      email: values.email,
      ...(values.org !== undefined ? { org: values.org } : {}),
      ...(values.scope !== undefined ? { scopes: values.scope } : {}),
      ...(values.name !== undefined ? { name: values.name } : {}),
    });
    process.stderr.write(
      `issued key ${issued.keyId} ("${issued.name}") for ${issued.email} (${issued.role}) with ${issued.scopes.join(", ")}; the token is shown once:\n`,
    );
    process.stdout.write(`${issued.token}\n`);
    return 0;
  } catch (error) {
    return fail(1, (error as Error).message);
  } finally {
    await store.close();
  }
}
