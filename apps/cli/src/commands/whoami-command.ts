import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues, formatPrincipal } from "../format.js";

/** `shells whoami`: who the token authenticates, with its role, scopes and entitlements. */
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
          ["actor", formatPrincipal(principal.actor)],
          ["role", principal.role],
          ["key", principal.keyId ?? "-"],
          ["scopes", principal.scopes.join(", ")],
          [
            "entitlements",
            principal.entitlements.length > 0 ? principal.entitlements.join(", ") : "-",
          ],
        ]),
      );
    });
}
