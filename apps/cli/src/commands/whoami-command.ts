import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues } from "../format.js";

/** `shells whoami`: who the token authenticates. */
export function registerWhoamiCommand(program: Command, ctx: CliContext): void {
  program
    .command("whoami")
    .description("show the principal the token authenticates")
    .action(async () => {
      const principal = await ctx.client().whoami();
      if (ctx.json) return ctx.printJson(principal);
      ctx.print(
        formatKeyValues([
          ["server", ctx.client().baseUrl],
          ["org", principal.orgId],
          ["actor", `${principal.actor.type}:${principal.actor.id}`],
          ["key", principal.keyId ?? "-"],
          ["scopes", principal.scopes.join(", ")],
        ]),
      );
    });
}
