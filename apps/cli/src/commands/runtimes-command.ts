import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

/** `shells runtimes`: which runtime classes the server can run, and why not. */
export function registerRuntimesCommand(program: Command, ctx: CliContext): void {
  program
    .command("runtimes")
    .description("show which runtime classes the server can run")
    .action(async () => {
      const runtimes = await ctx.client().runtimes();
      if (ctx.json) return ctx.printJson(runtimes);
      ctx.print(
        formatTable(
          ["runtime", "available", "backend", "note"],
          runtimes.map((r) => [
            r.runtime,
            r.available ? "yes" : "no",
            r.backend ?? "-",
            r.reason ?? "",
          ]),
        ),
      );
    });
}
