import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";

/**
 * `shells runtimes`: which runtime classes the server can run, and why not; then, for each class
 * that reports them, its language presets with the toolchain version each one's image holds.
 */
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
      for (const r of runtimes) {
        if (!r.presets?.length) continue;
        ctx.print(`\n${r.runtime} language presets:`);
        ctx.print(
          formatTable(
            ["language", "toolchain", "version", "image"],
            r.presets.map((p) => [
              p.language,
              p.toolchain,
              p.version ?? "(built on first use)",
              p.image ?? "-",
            ]),
          ),
        );
      }
    });
}
