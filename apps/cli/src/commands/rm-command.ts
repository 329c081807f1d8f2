import { isPendingApproval } from "@l1fe/shells";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatPendingApproval } from "../format.js";

/**
 * `shells rm ID`: delete a shell. When the org's gate parks it for an approver, the pending approval
 * is printed and the exit status is 0: the request was accepted.
 */
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
      const result = await ctx.client().delete(id, confirm === undefined ? {} : { confirm });
      if (ctx.json) ctx.printJson(result);
      else if (isPendingApproval(result)) ctx.print(formatPendingApproval(result, ctx.now()));
      else ctx.print(`deleted ${result.id} (${result.name})`);
    });
}
