import { Language, RuntimeClass, ShellStatus } from "@shells/contract";
import type { ListShellsQuery } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { SHELL_TABLE_HEADERS, formatTable, shellRow } from "../format.js";

/** `shells ls`: every shell of the org (all pages), newest first, as a table. */
export function registerLsCommand(program: Command, ctx: CliContext): void {
  program
    .command("ls")
    .alias("list")
    .description("list shells, newest first")
    .addOption(
      new Option("--status <status>", "only shells in this state").choices(ShellStatus.options),
    )
    .addOption(new Option("--language <language>", "only this language").choices(Language.options))
    .addOption(
      new Option("--runtime <class>", "only this runtime class").choices(RuntimeClass.options),
    )
    .action(async (options: ListShellsQuery) => {
      const shells = await ctx
        .client()
        .list({ ...options, limit: 200 })
        .toArray();
      if (ctx.json) return ctx.printJson(shells);
      if (shells.length === 0) return ctx.printErr("no shells");
      const now = ctx.now();
      ctx.print(
        formatTable(
          SHELL_TABLE_HEADERS,
          shells.map((shell) => shellRow(shell, now)),
        ),
      );
    });
}
