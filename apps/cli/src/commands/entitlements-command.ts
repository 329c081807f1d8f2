import { Entitlement } from "@shells/contract";
import type { EntitlementGrant } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatPrincipal, formatTable } from "../format.js";

interface GrantFlags {
  entitlement: Entitlement;
  agent?: string;
  user?: string;
}

/** One `shells entitlements ls` row. */
export function grantRow(grant: EntitlementGrant, nowMs: number): string[] {
  return [
    grant.id,
    grant.entitlement,
    formatPrincipal(grant.principal),
    grant.grantedBy,
    formatAge(grant.createdAt, nowMs),
  ];
}

/** `shells entitlements ls|grant|revoke`: who may use the agent gate. */
export function registerEntitlementsCommand(program: Command, ctx: CliContext): void {
  const entitlements = program
    .command("entitlements")
    .description("manage entitlements (shells.agent.invoke opens the agent gate)");

  entitlements
    .command("ls")
    .alias("list")
    .description("list who holds which entitlement")
    .action(async () => {
      const items = await ctx.client().entitlements.list();
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no entitlements granted");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "entitlement", "principal", "granted by", "age"],
          items.map((grant) => grantRow(grant, now)),
        ),
      );
    });

  entitlements
    .command("grant")
    .description("grant an entitlement to an agent or a member (admins)")
    .addOption(new Option("--agent <id>", "to this agent").conflicts("user"))
    .option("--user <id>", "to this member")
    .addOption(
      new Option("--entitlement <name>", "which entitlement")
        .choices(Entitlement.options)
        .default("shells.agent.invoke"),
    )
    .action(async (flags: GrantFlags, command: Command) => {
      const principal =
        flags.agent !== undefined
          ? { type: "agent" as const, id: flags.agent }
          : flags.user !== undefined
            ? { type: "user" as const, id: flags.user }
            : command.error("error: say to whom: --agent <id> or --user <id>");
      const grant = await ctx
        .client()
        .entitlements.grant({ entitlement: flags.entitlement, principal });
      if (ctx.json) ctx.printJson(grant);
      else
        ctx.print(
          `granted ${grant.entitlement} to ${formatPrincipal(grant.principal)} (grant ${grant.id})`,
        );
    });

  entitlements
    .command("revoke")
    .description("withdraw a grant (admins)")
    .argument("<id>", "grant id (see `shells entitlements ls`)")
    .action(async (id: string) => {
      const grant = await ctx.client().entitlements.revoke(id);
      if (ctx.json) ctx.printJson(grant);
      else
        ctx.print(
          `revoked ${grant.entitlement} from ${formatPrincipal(grant.principal)} (grant ${grant.id})`,
        );
    });
}
