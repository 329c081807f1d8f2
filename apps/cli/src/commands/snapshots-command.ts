import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatBytes, formatTable } from "../format.js";

/** `shells snapshots ID`: a shell's restore points. */
export function registerSnapshotsCommand(program: Command, ctx: CliContext): void {
  program
    .command("snapshots")
    .description("list a shell's restore points, newest first")
    .argument("<id>", "shell id or name")
    .action(async (id: string) => {
      const snapshots = await ctx.client().snapshots(id);
      if (ctx.json) return ctx.printJson(snapshots);
      if (snapshots.length === 0) return ctx.printErr("no snapshots");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["name", "size", "age"],
          snapshots.map((snapshot) => [
            snapshot.name,
            formatBytes(snapshot.sizeBytes),
            formatAge(snapshot.createdAt, now),
          ]),
        ),
      );
    });
}
