import type { Command } from "commander";
import type { CliContext } from "../context.js";

/** `shells audit verify`: re-compute the activity chain and name the first event that fails. */
export function registerAuditCommand(program: Command, ctx: CliContext): void {
  const audit = program.command("audit").description("check the activity history");
  audit
    .command("verify")
    .description(
      "re-compute the hash chain of the whole activity history; exit 1 if it was tampered with",
    )
    .action(async () => {
      const verification = await ctx.client().verifyActivity();
      if (!verification.ok) ctx.exitCode = 1;
      if (ctx.json) return ctx.printJson(verification);
      if (verification.ok) return ctx.print(`ok: ${verification.checked} events verified`);
      ctx.printErr(
        `tampered: event ${verification.eventId} (seq ${verification.seq}): ${verification.reason}\n` +
          `${verification.checked} events before it verified`,
      );
    });
}
