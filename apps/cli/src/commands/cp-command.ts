import { NotFoundError } from "@l1fe/shells";
import type { Command } from "commander";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { basename, posix, resolve } from "node:path";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatBytes } from "../format.js";
import { packDirectory, unpackArchive } from "../local-archive.js";

/** A `cp` operand inside a shell: `ID:PATH` (an empty path is /workspace). */
export interface RemoteOperand {
  shellId: string;
  path: string;
}

/**
 * Reads `ID:PATH` as a path inside a shell; anything else (`./file`, `/tmp/x`, `file`) is local. A
 * shell id never contains `.` or `/`, so `./a:b` stays local.
 */
export function parseRemoteOperand(operand: string): RemoteOperand | null {
  const match = /^([A-Za-z0-9_-]+):(.*)$/.exec(operand);
  if (!match) return null;
  return { shellId: match[1]!, path: match[2] === "" ? "/workspace" : match[2]! };
}

/** Where a file lands when the destination names a directory (a trailing `/`, or one that exists). */
function intoDirectory(directory: string, name: string): string {
  return posix.join(directory, name);
}

/**
 * `shells cp SRC DEST`: copy a file or directory between this machine and a shell, one side being
 * `ID:PATH`. Directories travel as tar archives; an archive from the shell is unpacked only if
 * every entry stays inside the destination.
 */
export function registerCpCommand(program: Command, ctx: CliContext): void {
  program
    .command("cp")
    .description("copy files or directories between this machine and a shell (ID:PATH)")
    .argument("<source>", "a local path, or ID:PATH inside a shell")
    .argument("<destination>", "a local path, or ID:PATH inside a shell")
    .addHelpText(
      "after",
      [
        "",
        "A directory is copied to exactly the destination (created if missing), not into it.",
        "Examples:",
        "  shells cp ./data.csv my-shell:/workspace/in/",
        "  shells cp ./project my-shell:/workspace/project",
        "  shells cp my-shell:/workspace/out ./out",
      ].join("\n"),
    )
    .action(async (source: string, destination: string) => {
      const from = parseRemoteOperand(source);
      const to = parseRemoteOperand(destination);
      if ((from === null) === (to === null)) {
        throw new CliError(
          "usage",
          "exactly one of source and destination must be ID:PATH inside a shell",
          { exitCode: USAGE_EXIT_CODE },
        );
      }
      if (to !== null) await upload(ctx, resolve(ctx.io.cwd, source), to);
      else if (from !== null) {
        await download(ctx, from, resolve(ctx.io.cwd, destination), destination.endsWith("/"));
      }
    });
}

async function upload(ctx: CliContext, localPath: string, to: RemoteOperand): Promise<void> {
  const files = ctx.client().files;
  const info = await stat(localPath).catch(() => {
    throw new CliError("file_not_found", `${localPath} does not exist on this machine`);
  });
  if (info.isDirectory()) {
    const { archive, entries, skipped } = await packDirectory(localPath);
    for (const name of skipped)
      ctx.printErr(`shells: skipped ${name}: not a file, directory or link`);
    const uploaded = await files.uploadDirectory(to.shellId, to.path, archive);
    if (ctx.json) return ctx.printJson(uploaded);
    return ctx.print(`copied ${entries} entries to ${to.shellId}:${uploaded.path}`);
  }
  let target = to.path;
  if (target.endsWith("/")) target = intoDirectory(target, basename(localPath));
  else {
    const existing = await files.stat(to.shellId, target).catch((error: unknown) => {
      if (error instanceof NotFoundError) return null;
      throw error;
    });
    if (existing?.type === "directory") target = intoDirectory(target, basename(localPath));
  }
  const written = await files.write(to.shellId, target, await readFile(localPath), {
    mode: info.mode & 0o777,
  });
  if (ctx.json) return ctx.printJson(written);
  ctx.print(`copied ${formatBytes(written.sizeBytes)} to ${to.shellId}:${written.path}`);
}

async function download(
  ctx: CliContext,
  from: RemoteOperand,
  localPath: string,
  intoLocalDirectory: boolean,
): Promise<void> {
  const files = ctx.client().files;
  const remote = await files.stat(from.shellId, from.path);
  if (remote.type === "directory") {
    const archive = await files.downloadDirectory(from.shellId, from.path);
    const entries = await unpackArchive(archive, localPath);
    if (ctx.json) return ctx.printJson({ path: localPath, entries });
    return ctx.print(`copied ${entries} entries to ${localPath}`);
  }
  let target = localPath;
  const local = await stat(localPath).catch(() => null);
  if (intoLocalDirectory && local === null) await mkdir(localPath, { recursive: true });
  if (intoLocalDirectory || local?.isDirectory()) {
    target = resolve(localPath, posix.basename(remote.path));
  }
  const bytes = await files.read(from.shellId, from.path);
  await writeFile(target, bytes, { mode: remote.mode & 0o777 });
  if (ctx.json) return ctx.printJson({ path: target, sizeBytes: bytes.length });
  ctx.print(`copied ${formatBytes(bytes.length)} to ${target}`);
}
