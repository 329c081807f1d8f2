import {
  artifactPatternProblem,
  ARTIFACT_PATTERN_LIMITS,
  type Artifact,
  type Run,
  type SkippedArtifact,
  type WorkspaceDiff,
} from "@shells/contract";
import type { SandboxFileInfo } from "@shells/sandbox";
import type { FastifyBaseLogger } from "fastify";
import picomatch from "picomatch";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, statfs, unlink, writeFile } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { AppError } from "../errors.js";
import { shellPath } from "./file-service.js";
import type { ShellService } from "./shell-service.js";

/** Limits on what one run keeps as artifacts. */
export const ARTIFACT_LIMITS = {
  /** Largest single artifact kept. */
  artifactBytes: 64 * 1024 * 1024,
  /** Bytes of artifacts one run may keep on the host, all together (the default quota). */
  runArtifactBytes: 64 * 1024 * 1024,
  /** Artifacts one run may keep (the default). */
  artifactCount: 100,
  /** Free space the data dir keeps whatever runs keep (the default). */
  reserveBytes: 1024 * 1024 * 1024,
};

/** Limits of what the runs of one server keep on its disk. */
export interface RunArtifactsOptions {
  /** Bytes of artifacts one run keeps, all together. */
  quotaBytes?: number;
  /** Artifacts one run keeps. */
  maxCount?: number;
  /** Free bytes the data dir's file system keeps: nothing is kept that would go below it. */
  reserveBytes?: number;
}

/** The running shell of a run, as the shell service hands it out. */
export type RunningShell = Awaited<ReturnType<ShellService["runningSandbox"]>>;

/**
 * The regular files under `dir` (directories entered `depth` levels deep; links are never
 * followed), stopping once `maxFiles` were found (`truncated` then says so). An unreadable
 * directory is skipped.
 */
export async function walkFiles(
  shell: RunningShell,
  dir: string,
  depth: number,
  maxFiles = Number.POSITIVE_INFINITY,
): Promise<{ files: SandboxFileInfo[]; truncated: boolean }> {
  const files: SandboxFileInfo[] = [];
  let truncated = false;
  const visit = async (at: string, left: number): Promise<void> => {
    if (left < 0) {
      truncated = true;
      return;
    }
    let entries: SandboxFileInfo[];
    try {
      entries = await shell.call((b) => b.files.list(shell.shellId, at));
    } catch {
      return;
    }
    for (const entry of entries) {
      if (files.length >= maxFiles) {
        truncated = true;
        return;
      }
      if (entry.type === "file") files.push(entry);
      else if (entry.type === "directory") await visit(entry.path, left - 1);
    }
  };
  await visit(dir, depth);
  return { files, truncated };
}

/**
 * A matcher for artifact globs (`*` within a segment, `**` across segments, `?`, `[…]`, `{a,b}`),
 * matched one path segment at a time: each segment's picomatch expression only ever sees one
 * file name, with at most two wildcards (see `artifactPatternProblem`), and `**` is stepped
 * through segment by segment, so no glob can make matching backtrack over a whole path.
 * Throws a `validation_failed` error for a glob the contract would refuse.
 */
export function artifactMatcher(globs: readonly string[]): (relative: string) => boolean {
  if (globs.length > ARTIFACT_PATTERN_LIMITS.count)
    throw new AppError(
      "validation_failed",
      `At most ${ARTIFACT_PATTERN_LIMITS.count} artifact patterns.`,
    );
  const compiled = globs.map((raw) => {
    const problem =
      raw.length > ARTIFACT_PATTERN_LIMITS.length
        ? `longer than ${ARTIFACT_PATTERN_LIMITS.length} characters`
        : artifactPatternProblem(raw);
    if (problem)
      throw new AppError("validation_failed", `Artifact pattern ${raw}: ${problem}.`, {
        pattern: raw,
      });
    const glob = raw.replace(/^\/workspace\//, "").replace(/^(\.\/)+/, "");
    return glob
      .split("/")
      .filter((segment) => segment !== "")
      .map((segment) =>
        segment === "**"
          ? null
          : picomatch(segment, { dot: true, noextglob: true, nonegate: true }),
      );
  });
  return (relative) => {
    const names = relative.split("/");
    return compiled.some((segments) => {
      // The set of pattern positions reachable so far; `**` (null) may consume any names.
      const closure = (positions: Set<number>) => {
        for (const at of positions) if (segments[at] === null) positions.add(at + 1);
        return positions;
      };
      let positions = closure(new Set([0]));
      for (const name of names) {
        const next = new Set<number>();
        for (const at of positions) {
          const segment = segments[at];
          if (segment === null) next.add(at);
          else if (segment !== undefined && segment(name)) next.add(at + 1);
        }
        positions = closure(next);
        if (positions.size === 0) return false;
      }
      return positions.has(segments.length);
    });
  };
}

/**
 * The runs table keeps a run's artifacts as JSON: a plain list of kept artifacts, or
 * `{ kept, skipped }` once something was skipped or deleted.
 */
export function storedArtifacts(json: string): Pick<Run, "artifacts" | "skippedArtifacts"> {
  const stored = JSON.parse(json) as Artifact[] | { kept: Artifact[]; skipped: SkippedArtifact[] };
  if (Array.isArray(stored)) return { artifacts: stored, skippedArtifacts: [] };
  return { artifacts: stored.kept, skippedArtifacts: stored.skipped };
}

/**
 * What runs keep on the host, per org: artifacts under `<dataDir>/runs/<orgId>/<runId>/`,
 * collected out of the run's shell within a per-run quota and count, read back by path, deleted
 * with the run's teardown or when its retention runs out; and workspace diffs under
 * `<dataDir>/run-diffs/<orgId>/<runId>.json`. Nothing is written that would leave the data dir's
 * file system less free space than its reserve, so no run fills the host's disk.
 */
export class RunArtifacts {
  readonly #quotaBytes: number;
  readonly #maxCount: number;
  readonly #reserveBytes: number;

  constructor(
    private readonly dataDir: string,
    private readonly logger: FastifyBaseLogger,
    options: RunArtifactsOptions = {},
  ) {
    this.#quotaBytes = options.quotaBytes ?? ARTIFACT_LIMITS.runArtifactBytes;
    this.#maxCount = options.maxCount ?? ARTIFACT_LIMITS.artifactCount;
    this.#reserveBytes = options.reserveBytes ?? ARTIFACT_LIMITS.reserveBytes;
  }

  /** The bytes of an artifact a run kept, by its path relative to `/workspace`. */
  async read(orgId: string, runId: string, relative: string): Promise<Uint8Array> {
    return readFile(this.#artifactPath(orgId, runId, relative));
  }

  /** Deletes every artifact a run kept from the host. */
  async remove(orgId: string, runId: string): Promise<void> {
    await rm(this.#artifactDir(orgId, runId), { recursive: true, force: true });
  }

  /**
   * Keeps a run's workspace diff; answers false (and keeps nothing) when it would leave the data
   * dir less than its reserve.
   */
  async writeDiff(orgId: string, runId: string, diff: WorkspaceDiff): Promise<boolean> {
    const bytes = Buffer.from(JSON.stringify(diff));
    if ((await this.#freeBytes()) - bytes.length < this.#reserveBytes) return false;
    const target = this.#diffPath(orgId, runId);
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    await writeFile(target, bytes, { mode: 0o600 });
    return true;
  }

  /** A run's workspace diff as kept, or null when none is. */
  async readDiff(orgId: string, runId: string): Promise<WorkspaceDiff | null> {
    try {
      return JSON.parse(await readFile(this.#diffPath(orgId, runId), "utf8")) as WorkspaceDiff;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw error;
    }
  }

  /** Deletes a run's workspace diff from the host; answers whether there was one. */
  async removeDiff(orgId: string, runId: string): Promise<boolean> {
    try {
      await unlink(this.#diffPath(orgId, runId));
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw error;
    }
  }

  /** Free bytes of the data dir's file system, for unprivileged writers. */
  async #freeBytes(): Promise<number> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    const stats = await statfs(this.dataDir);
    return stats.bavail * stats.bsize;
  }

  /**
   * Copies the files a run named (by `shells.artifact()` or by glob) out of its shell onto the host,
   * within the run's quota: sizes are the files' apparent sizes (a sparse file counts whole), each
   * read is capped at what is left, and what does not fit is recorded as skipped with the reason.
   */
  async collect(
    orgId: string,
    runId: string,
    shell: RunningShell,
    globs: string[],
    listFile: string,
  ): Promise<{ kept: Artifact[]; skipped: SkippedArtifact[] }> {
    const named = new Map<string, SandboxFileInfo | null>();
    try {
      const listed = new TextDecoder().decode(
        await shell.call((b) => b.files.read(shell.shellId, listFile, 1024 * 1024)),
      );
      for (const line of listed.split("\n"))
        if (line.trim()) named.set(shellPath(line.trim()), null);
    } catch {
      // no shells.artifact() calls
    }
    if (globs.length > 0) {
      const matches = artifactMatcher(globs);
      let checked = 0;
      for (const file of (await walkFiles(shell, "/workspace", 6)).files) {
        if (matches(file.path.replace(/^\/workspace\//, ""))) named.set(file.path, file);
        // Many files times many patterns is work a caller chooses: other callers get turns.
        checked += 1;
        if (checked % 256 === 0) await nextTurn(undefined);
      }
    }
    const kept: Artifact[] = [];
    const skipped: SkippedArtifact[] = [];
    const skip = (path: string, sizeBytes: number, reason: SkippedArtifact["reason"]) => {
      if (skipped.length < this.#maxCount) skipped.push({ path, sizeBytes, reason });
    };
    let usedBytes = 0;
    // Read once: what this run writes is at most its quota, so the reserve holds within it.
    const freeBytes = named.size > 0 ? await this.#freeBytes() : 0;
    for (const [path, listed] of named) {
      if (!path.startsWith("/workspace/")) continue;
      const relative = path.slice("/workspace/".length);
      if (kept.length >= this.#maxCount) {
        skip(relative, listed?.sizeBytes ?? 0, "count_exceeded");
        continue;
      }
      let info: SandboxFileInfo;
      try {
        info = listed ?? (await shell.call((b) => b.files.stat(shell.shellId, path)));
      } catch {
        skip(relative, 0, "unreadable");
        continue;
      }
      // Links are not followed: an artifact is a file the run wrote, never what a link names.
      if (info.type !== "file") {
        skip(relative, info.sizeBytes, "not_a_file");
        continue;
      }
      const room = Math.min(ARTIFACT_LIMITS.artifactBytes, this.#quotaBytes - usedBytes);
      if (info.sizeBytes > room) {
        skip(relative, info.sizeBytes, "quota_exceeded");
        continue;
      }
      if (freeBytes - usedBytes - info.sizeBytes < this.#reserveBytes) {
        skip(relative, info.sizeBytes, "host_disk_low");
        continue;
      }
      let bytes: Uint8Array;
      try {
        // Capped at what is left, so a file that grew since it was looked at cannot overrun it.
        bytes = await shell.call((b) => b.files.read(shell.shellId, path, room));
      } catch (error) {
        const tooLarge = error instanceof AppError && error.code === "file_too_large";
        skip(relative, info.sizeBytes, tooLarge ? "quota_exceeded" : "unreadable");
        continue;
      }
      const target = this.#artifactPath(orgId, runId, relative);
      try {
        await mkdir(dirname(target), { recursive: true, mode: 0o700 });
        await writeFile(target, bytes, { mode: 0o600 });
      } catch (error) {
        // The host path must not reach the run record, its frames or the activity history.
        this.logger.warn({ err: error, runId, artifact: relative }, "could not keep an artifact");
        // Only the message reaches the run record; the cause (with the host path) stays in the log.
        throw new Error(
          `could not keep the artifact ${relative} (a file and a directory of the same name?)`,
          { cause: error },
        );
      }
      usedBytes += bytes.length;
      kept.push({
        path: relative,
        sizeBytes: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
      });
    }
    return { kept, skipped };
  }

  #artifactPath(orgId: string, runId: string, relative: string): string {
    const clean = posix.normalize(relative);
    if (clean.startsWith("..") || clean.startsWith("/"))
      throw new AppError("invalid_path", `artifact path ${relative} is outside the workspace`);
    return join(this.#artifactDir(orgId, runId), clean);
  }

  #artifactDir(orgId: string, runId: string): string {
    return join(this.dataDir, "runs", orgId, runId);
  }

  #diffPath(orgId: string, runId: string): string {
    return join(this.dataDir, "run-diffs", orgId, `${runId}.json`);
  }
}
