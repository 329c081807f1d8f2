import {
  SandboxError,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFileInfo,
  type SandboxFiles,
} from "./backend.js";
import type { ExecResult } from "@shells/contract";

/** What `ExecFiles` needs from a backend: its own exec. */
export type ExecFn = (
  shellId: string,
  request: SandboxExecRequest,
  options?: SandboxExecOptions,
) => Promise<ExecResult>;

const FIND_FORMAT = "%y\\t%s\\t%m\\t%T@\\t%p\\0";
const TYPE: Record<string, SandboxFileInfo["type"]> = { f: "file", d: "directory", l: "symlink" };
/** Output room past a read's limit, for the error message a failed read prints. */
const ERROR_ROOM_BYTES = 4096;

function parseFind(output: Uint8Array): SandboxFileInfo[] {
  const text = new TextDecoder().decode(output);
  return text
    .split("\0")
    .filter((record) => record.length > 0)
    .map((record) => {
      const [type = "", size = "0", mode = "0", mtime = "0", ...path] = record.split("\t");
      return {
        path: path.join("\t"),
        type: TYPE[type] ?? "other",
        sizeBytes: Number(size),
        mode: parseInt(mode, 8),
        modifiedAt: new Date(Math.floor(Number(mtime) * 1000)).toISOString(),
      };
    });
}

/**
 * File operations carried out by running small, fixed POSIX scripts inside the shell (find, cat,
 * head, rm, tar — all in every base image). The path is passed as an argument, never spliced into
 * the script, and is resolved by the sandbox's own mount namespace as the sandbox's root: a
 * symlink inside the shell can only ever lead to another place inside the shell.
 */
export class ExecFiles implements SandboxFiles {
  constructor(private readonly exec: ExecFn) {}

  async #run(
    shellId: string,
    script: string,
    args: string[],
    stdin?: Uint8Array,
    maxOutputBytes = 1024 * 1024,
  ) {
    const chunks: Uint8Array[] = [];
    let size = 0;
    const result = await this.exec(
      shellId,
      {
        command: ["sh", "-c", script, "sh", ...args],
        env: {},
        cwd: "/",
        stdin,
        timeoutMs: 60_000,
        maxOutputBytes,
      },
      {
        onOutput: (stream, chunk) => {
          if (stream !== "stdout") return;
          chunks.push(chunk);
          size += chunk.length;
        },
      },
    );
    const out = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return { result, out };
  }

  #fail(result: ExecResult, path: string): never {
    if (/No such file|not found/i.test(result.stderr))
      throw new SandboxError("path_not_found", `${path} does not exist in the shell`, { path });
    if (/Not a directory|Is a directory/i.test(result.stderr))
      throw new SandboxError("wrong_file_type", `${path}: ${result.stderr.trim()}`, { path });
    throw new SandboxError(
      "failed",
      `file operation on ${path} failed: ${result.stderr.trim() || `exit ${result.exitCode}`}`,
      { path },
    );
  }

  async stat(shellId: string, path: string): Promise<SandboxFileInfo> {
    const { result, out } = await this.#run(
      shellId,
      `find "$1" -maxdepth 0 -printf '${FIND_FORMAT}'`,
      [path],
    );
    const [info] = parseFind(out);
    if (result.exitCode !== 0 || !info) this.#fail(result, path);
    return info;
  }

  async list(shellId: string, path: string): Promise<SandboxFileInfo[]> {
    const dir = await this.stat(shellId, path);
    if (dir.type !== "directory")
      throw new SandboxError("wrong_file_type", `${path} is not a directory`, { path });
    const { result, out } = await this.#run(
      shellId,
      `find "$1" -mindepth 1 -maxdepth 1 -printf '${FIND_FORMAT}'`,
      [path],
      undefined,
      16 * 1024 * 1024,
    );
    if (result.exitCode !== 0) this.#fail(result, path);
    return parseFind(out).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  async read(shellId: string, path: string, maxBytes: number): Promise<Uint8Array> {
    const { result, out } = await this.#run(
      shellId,
      `if [ -d "$1" ]; then echo "$1: Is a directory" >&2; exit 1; fi; head -c "$2" -- "$1"`,
      [path, String(maxBytes + 1)],
      undefined,
      // `head` stops the file at one byte over the limit; the rest is room for an error message
      // (a limit smaller than "No such file or directory" must still tell a missing file).
      maxBytes + 1 + ERROR_ROOM_BYTES,
    );
    if (out.length > maxBytes) {
      throw new SandboxError("failed", `${path} is larger than ${maxBytes} bytes`, {
        path,
        limitBytes: maxBytes,
        tooLarge: true,
      });
    }
    if (result.exitCode !== 0 || result.killReason !== undefined) this.#fail(result, path);
    return out;
  }

  async write(
    shellId: string,
    path: string,
    data: Uint8Array,
    mode?: number,
  ): Promise<SandboxFileInfo> {
    const { result } = await this.#run(
      shellId,
      `mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && if [ -n "$2" ]; then chmod "$2" -- "$1"; fi`,
      [path, mode === undefined ? "" : mode.toString(8)],
      data,
    );
    if (result.exitCode !== 0) this.#fail(result, path);
    return this.stat(shellId, path);
  }

  async remove(shellId: string, path: string, recursive: boolean): Promise<void> {
    const info = await this.stat(shellId, path);
    const script =
      info.type === "directory"
        ? recursive
          ? `rm -rf -- "$1"`
          : `rmdir -- "$1"`
        : `rm -f -- "$1"`;
    const { result } = await this.#run(shellId, script, [path]);
    if (result.exitCode !== 0) {
      if (/not empty/i.test(result.stderr))
        throw new SandboxError("wrong_file_type", `${path} is not empty; remove it recursively`, {
          path,
        });
      this.#fail(result, path);
    }
  }

  async exportTar(shellId: string, path: string, maxBytes: number): Promise<Uint8Array> {
    const dir = await this.stat(shellId, path);
    if (dir.type !== "directory")
      throw new SandboxError("wrong_file_type", `${path} is not a directory`, { path });
    const { result, out } = await this.#run(
      shellId,
      `tar -C "$1" -cf - .`,
      [path],
      undefined,
      maxBytes + 1,
    );
    if (out.length > maxBytes || result.killReason === "output_limit") {
      throw new SandboxError("failed", `the archive of ${path} is larger than ${maxBytes} bytes`, {
        path,
        limitBytes: maxBytes,
        tooLarge: true,
      });
    }
    if (result.exitCode !== 0) this.#fail(result, path);
    return out;
  }

  async importTar(shellId: string, path: string, tar: Uint8Array): Promise<void> {
    const { result } = await this.#run(
      shellId,
      `mkdir -p -- "$1" && tar -C "$1" -xf - --no-same-owner`,
      [path],
      tar,
    );
    if (result.exitCode !== 0) this.#fail(result, path);
  }
}
