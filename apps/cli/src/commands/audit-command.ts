import type { Command } from "commander";
import type { CliContext } from "../context.js";

/**
 * `shells audit verify`: re-compute the activity chain, name the first event that fails, and say
 * plainly what that proves and what it cannot: the chain links from its first event to its head,
 * but a truncated tail or a chain rewritten and re-hashed after an edit still links. The head hash
 * is printed so it can be recorded elsewhere and checked later with `--expect-head`.
 */
export function registerAuditCommand(program: Command, ctx: CliContext): void {
  const audit = program.command("audit").description("check the activity history");
  audit
    .command("verify")
    .description(
      "re-compute the hash chain of the whole activity history; exit 1 if it does not hold (or no longer contains --expect-head)",
    )
    .option(
      "--expect-head <hash>",
      "a head hash recorded earlier, outside the server: fail unless the chain still contains it",
    )
    .action(async (options: { expectHead?: string }) => {
      const verification = await ctx
        .client()
        .verifyActivity(options.expectHead === undefined ? {} : { expectHead: options.expectHead });
      if (!verification.ok) ctx.exitCode = 1;
      if (ctx.json) return ctx.printJson(verification);
      const head = verification.head;
      const headLines = head
        ? [`head: seq ${head.seq}, event ${head.eventId}, ${head.time}`, `head hash: ${head.hash}`]
        : ["head: none (the history is empty)"];
      if (verification.ok) {
        return ctx.print(
          [
            `ok: ${verification.checked} events verified`,
            ...headLines,
            ...(verification.expectedHead
              ? [`expected head ${verification.expectedHead.hash} is in the chain`]
              : []),
            `proved: ${verification.proves}`,
            `not proved: ${verification.cannotProve}`,
            "record the head hash outside this server to check it later",
          ].join("\n"),
        );
      }
      const where =
        verification.eventId === null
          ? "tampered"
          : `tampered: event ${verification.eventId} (seq ${verification.seq ?? "?"})`;
      ctx.printErr(
        [
          `${where}: ${verification.reason}`,
          `${verification.checked} events before it verified`,
          ...headLines,
        ].join("\n"),
      );
    });
}
