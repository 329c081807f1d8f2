import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatShell } from "../format.js";

/** `shells get ID`: everything about one shell. */
export function registerGetCommand(program: Command, ctx: CliContext): void {
  program
    .command("get")
    .description("show one shell")
    .argument("<id>", "shell id or name")
    .action(async (id: string) => {
      const shell = await ctx.client().get(id);
      if (ctx.json) ctx.printJson(shell);
      else ctx.print(formatShell(shell, ctx.now()));
    });
}
