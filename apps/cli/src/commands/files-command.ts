import type { FileInfo } from "@l1fe/shells";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatBytes, formatKeyValues, formatMode, formatTable } from "../format.js";

/** One `shells files ls` row. */
export function fileRow(file: FileInfo, nowMs: number): string[] {
  return [
    file.type,
    formatMode(file.mode),
    formatBytes(file.sizeBytes),
    formatAge(file.modifiedAt, nowMs),
    file.type === "directory" ? `${file.path}/` : file.path,
  ];
}

/** `shells files ls|stat|rm ID PATH`: files inside a running shell. */
export function registerFilesCommand(program: Command, ctx: CliContext): void {
  const files = program
    .command("files")
    .description("list, inspect and remove files inside a running shell (copy with `shells cp`)");

  files
    .command("ls")
    .alias("list")
    .description("list a directory (paths are absolute or relative to /workspace)")
    .argument("<id>", "shell id or name")
    .argument("[path]", "directory", "/workspace")
    .action(async (id: string, path: string) => {
      const items = await ctx.client().files.list(id, path);
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("empty directory");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["type", "mode", "size", "modified", "path"],
          items.map((file) => fileRow(file, now)),
        ),
      );
    });

  files
    .command("stat")
    .description("describe one file or directory")
    .argument("<id>", "shell id or name")
    .argument("<path>", "file or directory")
    .action(async (id: string, path: string) => {
      const file = await ctx.client().files.stat(id, path);
      if (ctx.json) return ctx.printJson(file);
      ctx.print(
        formatKeyValues([
          ["path", file.path],
          ["type", file.type],
          ["size", `${formatBytes(file.sizeBytes)} (${file.sizeBytes} bytes)`],
          [
            "mode",
            `${formatMode(file.mode)} (${(file.mode & 0o7777).toString(8).padStart(4, "0")})`,
          ],
          ["modified", `${file.modifiedAt} (${formatAge(file.modifiedAt, ctx.now())} ago)`],
        ]),
      );
    });

  files
    .command("rm")
    .description("remove a file, or a directory (-r when it is not empty)")
    .argument("<id>", "shell id or name")
    .argument("<path>", "file or directory")
    .option("-r, --recursive", "remove a directory and everything in it")
    .action(async (id: string, path: string, flags: { recursive?: boolean }) => {
      const removed = await ctx.client().files.remove(id, path, { recursive: flags.recursive });
      if (ctx.json) ctx.printJson(removed);
      else ctx.print(`removed ${removed.path}`);
    });
}
