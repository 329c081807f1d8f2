import { Scope } from "@shells/contract";
import type { ApiKey, ApiKeyCreate, ApiKeyCreated } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { parsePositiveInt } from "../parsers.js";
import { formatAge, formatKeyValues, formatPrincipal, formatTable } from "../format.js";

interface KeyCreateFlags {
  name: string;
  scope: Scope[];
  agent?: string;
  user?: string;
  expiresInDays?: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** One `shells keys ls` row. */
export function keyRow(key: ApiKey, nowMs: number): string[] {
  return [
    key.id,
    key.name,
    formatPrincipal(key.principal),
    key.revokedAt !== null
      ? "revoked"
      : key.expiresAt !== null && Date.parse(key.expiresAt) <= nowMs
        ? "expired"
        : "active",
    key.lastUsedAt === null ? "never" : `${formatAge(key.lastUsedAt, nowMs)} ago`,
    formatAge(key.createdAt, nowMs),
    key.scopes.join(","),
  ];
}

/**
 * What `shells keys create` prints: the key, then its secret on a line of its own. The server
 * keeps only a hash of the secret, so this is the one chance to copy it.
 */
export function formatCreatedKey(created: ApiKeyCreated): string {
  const { key, token } = created;
  return [
    formatKeyValues([
      ["key", `${key.id} (${key.name})`],
      ["for", formatPrincipal(key.principal)],
      ["scopes", key.scopes.join(", ")],
      ["expires", key.expiresAt ?? "never (until revoked)"],
    ]),
    "",
    `token: ${token}`,
    "",
    "warning: this token is shown once and never again; store it now (e.g. as SHELLS_API_TOKEN).",
  ].join("\n");
}

/** `shells keys ls|create|revoke`: API keys. */
export function registerKeysCommand(program: Command, ctx: CliContext): void {
  const keys = program
    .command("keys")
    .description("manage API keys (admins see the org's, others their own)");

  keys
    .command("ls")
    .alias("list")
    .description("list API keys; secrets are never listed")
    .action(async () => {
      const items = await ctx.client().keys.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no keys");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "name", "principal", "status", "used", "age", "scopes"],
          items.map((key) => keyRow(key, now)),
        ),
      );
    });

  keys
    .command("create")
    .description("issue an API key; its token is printed this once only")
    .requiredOption("--name <name>", "what the key is for (e.g. laptop, ci)")
    .addOption(
      new Option("--scope <scope...>", "a scope the key carries (repeatable)")
        .choices(Scope.options)
        .makeOptionMandatory(),
    )
    .addOption(new Option("--agent <id>", "issue the key to this agent (admins)").conflicts("user"))
    .option(
      "--user <id>",
      "issue the key to this member: only yourself (a key acts as its holder; default)",
    )
    .option(
      "--expires-in-days <days>",
      "the key stops working after this many days (default: until revoked)",
      parsePositiveInt,
    )
    .action(async (flags: KeyCreateFlags) => {
      const body: ApiKeyCreate = { name: flags.name, scopes: flags.scope };
      if (flags.expiresInDays !== undefined)
        body.expiresAt = new Date(ctx.now() + flags.expiresInDays * DAY_MS).toISOString();
      if (flags.agent !== undefined) body.principal = { type: "agent", id: flags.agent };
      if (flags.user !== undefined) body.principal = { type: "user", id: flags.user };
      const created = await ctx.client().keys.create(body);
      if (ctx.json) ctx.printJson(created);
      else ctx.print(formatCreatedKey(created));
    });

  keys
    .command("revoke")
    .description("revoke an API key: its token stops working at once")
    .argument("<id>", "key id (see `shells keys ls`)")
    .action(async (id: string) => {
      const key = await ctx.client().keys.revoke(id);
      if (ctx.json) ctx.printJson(key);
      else ctx.print(`revoked ${key.id} (${key.name})`);
    });
}
