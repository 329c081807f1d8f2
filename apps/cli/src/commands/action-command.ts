import { Capability } from "@shells/contract";
import { isPendingApproval, type ActionOptions, type ActionResult } from "@l1fe/shells";
import { Argument, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatBytes, formatPendingApproval } from "../format.js";
import { parsePositiveInt } from "../parsers.js";

interface ActionFlags {
  /** `true` when given without a value: confirm with the id as typed. */
  confirm?: string | true;
  name?: string;
  snapshot?: string;
  tail?: number;
}

/** How `shells action` prints a result: the log lines for `logs`, else what happened. */
export function formatActionResult(result: ActionResult): string {
  if (result.capability === "logs") {
    return (result.logs ?? [])
      .map((entry) => `${entry.time}  ${entry.kind.padEnd(6)}  ${entry.message}`)
      .join("\n");
  }
  const lines = [result.message];
  if (result.snapshot) {
    lines.push(
      `snapshot ${result.snapshot.name} (${formatBytes(result.snapshot.sizeBytes)}, ${result.snapshot.createdAt})`,
    );
  }
  lines.push(`status: ${result.shell.status}`);
  return lines.join("\n");
}

/**
 * `shells action ID CAPABILITY`: run a lifecycle capability. When the org's gate parks it for an
 * approver, the pending approval is printed and the exit status is 0: the request was accepted.
 */
export function registerActionCommand(program: Command, ctx: CliContext): void {
  program
    .command("action")
    .description("run a lifecycle capability on a shell")
    .argument("<id>", "shell id or name")
    .addArgument(new Argument("<capability>", "what to do").choices(Capability.options))
    .option(
      "--confirm [text]",
      "typed confirmation for actions the org gates by confirm (the shell's name or id; alone: the id given)",
    )
    .option("--name <name>", "snapshot: name of the restore point to create")
    .option("--snapshot <name>", "restore: restore point to return to (default: the newest)")
    .option("--tail <count>", "logs: how many of the newest lines", parsePositiveInt)
    .action(async (id: string, capability: Capability, flags: ActionFlags) => {
      const options: ActionOptions = {};
      if (flags.confirm !== undefined)
        options.confirm = flags.confirm === true ? id : flags.confirm;
      if (flags.name !== undefined) options.name = flags.name;
      if (flags.snapshot !== undefined) options.snapshot = flags.snapshot;
      if (flags.tail !== undefined) options.tail = flags.tail;
      const result = await ctx.client().action(id, capability, options);
      if (ctx.json) ctx.printJson(result);
      else if (isPendingApproval(result)) ctx.print(formatPendingApproval(result, ctx.now()));
      else ctx.print(formatActionResult(result));
    });
}
