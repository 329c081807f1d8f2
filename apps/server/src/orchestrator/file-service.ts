import type { FileInfo, RouteQuery } from "@shells/contract";
import { TarFormatError, UnsafeTarError, sanitizeTar, type SandboxFileInfo } from "@shells/sandbox";
import { posix } from "node:path";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import type { ActivityService } from "../services/activity-service.js";
import type { ShellService } from "./shell-service.js";

/** Largest file read or written through the API. */
export const MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Largest archive exported or imported through the API. */
export const MAX_ARCHIVE_BYTES = 256 * 1024 * 1024;

/**
 * A request path as an absolute path inside the shell: relative paths are taken from /workspace.
 * `..` and NUL were refused by the contract already; here `//` and `/./` collapse.
 */
export function shellPath(path: string): string {
  const absolute = path.startsWith("/") ? path : `/workspace/${path}`;
  const normal = posix.normalize(absolute).replace(/\/+$/, "") || "/";
  if (normal.split("/").includes(".."))
    throw new AppError("invalid_path", `${path} climbs out with ..`);
  return normal;
}

function toFileInfo(info: SandboxFileInfo): FileInfo {
  return {
    path: info.path,
    type: info.type,
    sizeBytes: info.sizeBytes,
    mode: info.mode,
    modifiedAt: info.modifiedAt,
  };
}

/** Reads serve paused shells too; writes, removals and uploads need a running one. */
const READ_ONLY = { readWhilePaused: true } as const;

/**
 * Files inside running shells (and, for reads, paused ones). Every path resolves inside the shell's own root — the backend runs
 * the operation as the sandbox — and archives are checked entry by entry, while they are read,
 * before anything unpacks.
 * Writes, removals and downloads are activity events (paths and sizes, never contents).
 */
export class FileService {
  constructor(
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
  ) {}

  async list(caller: Caller, id: string, path: string): Promise<FileInfo[]> {
    const shell = await this.shells.runningSandbox(caller, id, READ_ONLY);
    return (await shell.call((b) => b.files.list(shell.shellId, shellPath(path)))).map(toFileInfo);
  }

  async stat(caller: Caller, id: string, path: string): Promise<FileInfo> {
    const shell = await this.shells.runningSandbox(caller, id, READ_ONLY);
    return toFileInfo(await shell.call((b) => b.files.stat(shell.shellId, shellPath(path))));
  }

  async read(caller: Caller, id: string, path: string): Promise<Uint8Array> {
    const shell = await this.shells.runningSandbox(caller, id, READ_ONLY);
    const target = shellPath(path);
    const bytes = await shell.call((b) => b.files.read(shell.shellId, target, MAX_FILE_BYTES));
    await this.#record(caller, shell.shellId, "shell.files.read", {
      path: target,
      sizeBytes: bytes.length,
    });
    return bytes;
  }

  async write(
    caller: Caller,
    id: string,
    query: RouteQuery<"writeFile">,
    data: Buffer,
  ): Promise<FileInfo> {
    const shell = await this.shells.runningSandbox(caller, id);
    const target = shellPath(query.path);
    const mode = query.mode === undefined ? undefined : parseInt(query.mode, 8);
    const info = await shell.call((b) => b.files.write(shell.shellId, target, data, mode));
    await this.#record(caller, shell.shellId, "shell.files.write", {
      path: target,
      sizeBytes: data.length,
    });
    return toFileInfo(info);
  }

  async remove(
    caller: Caller,
    id: string,
    path: string,
    recursive: boolean,
  ): Promise<{ path: string; removed: true }> {
    const shell = await this.shells.runningSandbox(caller, id);
    const target = shellPath(path);
    if (target === "/")
      throw new AppError(
        "invalid_path",
        "Refusing to remove the shell's root; use the wipe_state action.",
      );
    await shell.call((b) => b.files.remove(shell.shellId, target, recursive));
    await this.#record(caller, shell.shellId, "shell.files.remove", { path: target, recursive });
    return { path: target, removed: true };
  }

  async exportArchive(caller: Caller, id: string, path: string): Promise<Uint8Array> {
    const shell = await this.shells.runningSandbox(caller, id, READ_ONLY);
    const target = shellPath(path);
    const archive = await shell.call((b) =>
      b.files.exportTar(shell.shellId, target, MAX_ARCHIVE_BYTES),
    );
    await this.#record(caller, shell.shellId, "shell.files.download_archive", {
      path: target,
      sizeBytes: archive.length,
    });
    return archive;
  }

  async importArchive(
    caller: Caller,
    id: string,
    path: string,
    archive: Buffer,
  ): Promise<{ path: string; entries: number }> {
    const shell = await this.shells.runningSandbox(caller, id);
    const target = shellPath(path);
    let checked;
    try {
      checked = await sanitizeTar(archive);
    } catch (error) {
      if (error instanceof TarFormatError)
        throw new AppError("unsafe_archive", `Not a valid tar archive: ${error.message}.`);
      if (error instanceof UnsafeTarError)
        throw new AppError(
          "unsafe_archive",
          `Refusing the archive: ${error.reason}. Nothing was written.`,
          { entry: error.entry },
        );
      throw error;
    }
    // What unpacks is the rewrite of the checked entries, never the bytes as uploaded.
    await shell.call((b) => b.files.importTar(shell.shellId, target, checked.archive));
    await this.#record(caller, shell.shellId, "shell.files.upload_archive", {
      path: target,
      entries: checked.entries,
      sizeBytes: archive.length,
    });
    return { path: target, entries: checked.entries };
  }

  async #record(caller: Caller, shellId: string, action: string, details: Record<string, unknown>) {
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action,
      target: { type: "shell", id: shellId },
      outcome: "success",
      details,
    });
  }
}
