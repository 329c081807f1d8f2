import type { ShellForkResult } from "@l1fe/shells";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatBytes, formatTable } from "../format.js";
import { parsePositiveInt } from "../parsers.js";

interface ForkFlags {
  count?: number;
  name?: string[];
}

/** How the parent's state reached the new shells, in words. */
const FILESYSTEM_WORDS: Record<ShellForkResult["state"]["filesystem"]["method"], string> = {
  layered: "shared layer (nothing copied)",
  layered_reflink: "shared layer (reflinked, nothing copied)",
  layered_copy_once: "shared layer (copied once)",
  reflink: "shared by reflink",
  copy: "copied",
};

/** How `shells fork` prints a result: the new shells, how the state came, what failed. */
export function formatForkResult(result: ShellForkResult): string {
  const { filesystem } = result.state;
  const lines = [
    formatTable(
      ["id", "name", "status"],
      result.shells.map((shell) => [shell.id, shell.name, shell.status]),
    ),
    `filesystem: ${FILESYSTEM_WORDS[filesystem.method]}, ${formatBytes(filesystem.bytesPerShell)} ${filesystem.method.startsWith("layered") ? "shared" : "per shell"}; parent frozen ${Math.round(filesystem.parentFrozenMs)} ms; memory not copied`,
  ];
  for (const failure of result.failed)
    lines.push(
      `not made: shell ${failure.index + 1}${failure.name ? ` (${failure.name})` : ""}: ${failure.code}: ${failure.message}`,
    );
  return lines.join("\n");
}

/**
 * `shells fork ID`: new shells from a shell's filesystem at one instant. Exits non-zero when some
 * of them could not be made (the ones made are printed).
 */
export function registerForkCommand(program: Command, ctx: CliContext): void {
  program
    .command("fork")
    .description(
      "make new shells from a shell's filesystem at one instant (processes are not copied)",
    )
    .argument("<id>", "shell id or name to fork")
    .option(
      "-n, --count <count>",
      "how many shells (default: one, or one per --name)",
      parsePositiveInt,
    )
    .option(
      "--name <name>",
      "name of a new shell (repeat for each, in order)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .action(async (id: string, flags: ForkFlags) => {
      const count = flags.count ?? flags.name?.length ?? 1;
      if (flags.name && flags.name.length !== count)
        throw new CliError("usage", `--count ${count} needs ${count} --name options, or none`, {
          exitCode: USAGE_EXIT_CODE,
        });
      const result = await ctx
        .client()
        .fork(id, { count, ...(flags.name ? { names: flags.name } : {}) });
      if (ctx.json) ctx.printJson(result);
      else ctx.print(formatForkResult(result));
      if (result.failed.length > 0) ctx.exitCode = 1;
    });
}
