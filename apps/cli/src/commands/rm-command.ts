import type { Command } from "commander";
import type { CliContext } from "../context.js";

/** `shells rm ID`: delete a shell. */
export function registerRmCommand(program: Command, ctx: CliContext): void {
  program
    .command("rm")
    .alias("delete")
    .description("delete a shell: end its processes and reclaim everything it holds")
    .argument("<id>", "shell id or name")
    .option(
      "--confirm [text]",
      "typed confirmation when the org asks for one (alone: the id given)",
    )
    .action(async (id: string, flags: { confirm?: string | true }) => {
      const confirm = flags.confirm === true ? id : flags.confirm;
      const shell = await ctx.client().delete(id, confirm === undefined ? {} : { confirm });
      if (ctx.json) ctx.printJson(shell);
      else ctx.print(`deleted ${shell.id} (${shell.name})`);
    });
}
