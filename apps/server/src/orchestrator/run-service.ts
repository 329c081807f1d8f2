import {
  artifactPatternProblem,
  ARTIFACT_PATTERN_LIMITS,
  type ActivityEvent,
  type Artifact,
  type Run,
  type RunFrame,
  type RouteBody,
  type SkippedArtifact,
} from "@shells/contract";
import { NODE_HELPER, PYTHON_HELPER, RUNNER_DIR, mainFile, runCommand } from "@shells/runner";
import type { SandboxFileInfo } from "@shells/sandbox";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely, Selectable } from "kysely";
import picomatch from "picomatch";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { Database, RunTable } from "../store/schema.js";
import { shellPath } from "./file-service.js";
import type { ShellService } from "./shell-service.js";

/** Limits of one-shot runs. */
export const RUN_LIMITS = {
  defaultTimeoutMs: 5 * 60 * 1000,
  /** Largest single artifact kept. */
  artifactBytes: 64 * 1024 * 1024,
  /** Bytes of artifacts one run may keep on the host, all together (the default quota). */
  runArtifactBytes: 64 * 1024 * 1024,
  artifactCount: 100,
  /** Output kept as frames per run; past it output frames stop (the exec's own limit still applies). */
  frameOutputBytes: 10 * 1024 * 1024,
};

const encoder = new TextEncoder();

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
function storedArtifacts(json: string): Pick<Run, "artifacts" | "skippedArtifacts"> {
  const stored = JSON.parse(json) as Artifact[] | { kept: Artifact[]; skipped: SkippedArtifact[] };
  if (Array.isArray(stored)) return { artifacts: stored, skippedArtifacts: [] };
  return { artifacts: stored.kept, skippedArtifacts: stored.skipped };
}

function toRun(row: Selectable<RunTable>): Run {
  return {
    id: row.id,
    status: row.status,
    language: row.language as Run["language"],
    runtime: row.runtime as Run["runtime"],
    shellId: row.shell_id,
    exitCode: row.exit_code,
    killReason: row.kill_reason as Run["killReason"],
    result: row.result === null ? null : (JSON.parse(row.result) as unknown),
    ...storedArtifacts(row.artifacts),
    error: row.error,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
  };
}

/**
 * One-shot runs: an ephemeral shell is created, seeded, runs the code or command with output
 * streamed as frames, reports its structured result and artifacts, and is torn down. Frames are
 * stored, so a stream can be resumed from any `seq`; artifacts are kept under the data dir per org.
 */
export class RunService {
  readonly #listeners = new Map<string, Set<(frame: RunFrame) => void>>();
  readonly #cancel = new Map<string, AbortController>();
  readonly #running = new Map<string, Promise<void>>();
  readonly #artifactQuotaBytes: number;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
    private readonly dataDir: string,
    private readonly logger: FastifyBaseLogger,
    options: { artifactQuotaBytes?: number } = {},
  ) {
    this.#artifactQuotaBytes = options.artifactQuotaBytes ?? RUN_LIMITS.runArtifactBytes;
  }

  async create(caller: Caller, body: RouteBody<"createRun">): Promise<Run> {
    // Refuse unmatchable patterns before any shell exists (the contract refuses them too).
    artifactMatcher(body.artifacts ?? []);
    const id = newId("run", 10);
    const shell = await this.shells.create(caller, {
      name: id,
      language: body.language,
      ...(body.runtime ? { runtime: body.runtime } : {}),
      ...(body.network ? { network: body.network } : {}),
      ...(body.env ? { env: body.env } : {}),
      ...(body.secretEnv ? { secretEnv: body.secretEnv } : {}),
    });
    const row: Selectable<RunTable> = {
      id,
      org_id: caller.orgId,
      shell_id: shell.id,
      status: "running",
      language: body.language,
      runtime: shell.runtime,
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
      exit_code: null,
      kill_reason: null,
      result: null,
      artifacts: "[]",
      error: null,
      created_at: nowIso(),
      finished_at: null,
    };
    await this.db.insertInto("runs").values(row).execute();
    await this.#event(caller, id, "run.start", {
      shellId: shell.id,
      language: body.language,
      mode: body.code !== undefined ? "code" : "command",
    });
    const controller = new AbortController();
    this.#cancel.set(id, controller);
    const work = this.#execute(caller, row, body, controller.signal)
      .catch((error: unknown) => this.logger.error({ err: error, runId: id }, "run failed"))
      .finally(() => {
        this.#cancel.delete(id);
        this.#running.delete(id);
      });
    this.#running.set(id, work);
    return toRun(row);
  }

  async get(caller: Caller, id: string): Promise<Run> {
    return toRun(await this.#row(caller, id));
  }

  /** Resolves once the run ended (or `timeoutMs` passed), with the run as it then stands. */
  async waitFor(caller: Caller, id: string, timeoutMs: number): Promise<Run> {
    const deadline = Date.now() + timeoutMs;
    await new Promise<void>((resolve) => {
      const unsubscribe = this.subscribe(id, (frame) => {
        if (frame.type !== "exit") return;
        unsubscribe();
        resolve();
      });
      void this.get(caller, id).then((run) => {
        if (run.status !== "running") {
          unsubscribe();
          resolve();
        }
      });
      setTimeout(
        () => {
          unsubscribe();
          resolve();
        },
        Math.max(0, deadline - Date.now()),
      ).unref();
    });
    // The exit frame is emitted just before the row is final: wait for the row.
    for (let i = 0; i < 100; i += 1) {
      const run = await this.get(caller, id);
      if (run.status !== "running" || Date.now() > deadline) return run;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.get(caller, id);
  }

  async list(caller: Caller, limit: number): Promise<Run[]> {
    const rows = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at", "desc")
      .limit(limit)
      .execute();
    return rows.map(toRun);
  }

  /** Frames after `afterSeq`, in order. */
  async frames(caller: Caller, id: string, afterSeq = 0): Promise<RunFrame[]> {
    await this.#row(caller, id);
    const rows = await this.db
      .selectFrom("run_frames")
      .selectAll()
      .where("run_id", "=", id)
      .where("seq", ">", afterSeq)
      .orderBy("seq")
      .execute();
    return rows.map((r) => ({
      seq: r.seq,
      type: r.type,
      data: JSON.parse(r.data) as unknown,
      time: r.time,
    }));
  }

  /** Calls `listener` with every new frame of a run until the returned function is called. */
  subscribe(id: string, listener: (frame: RunFrame) => void): () => void {
    const set = this.#listeners.get(id) ?? new Set();
    set.add(listener);
    this.#listeners.set(id, set);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(id);
    };
  }

  async activityOf(caller: Caller, id: string): Promise<ActivityEvent[]> {
    const run = await this.#row(caller, id);
    return this.activity.forTargets(caller.orgId, [run.id, run.shell_id]);
  }

  async artifact(caller: Caller, id: string, path: string): Promise<Uint8Array> {
    const run = toRun(await this.#row(caller, id));
    const normal = posix.normalize(path).replace(/^\/workspace\//, "");
    const known = run.artifacts.find((a) => a.path === normal);
    if (!known)
      throw new AppError(
        "file_not_found",
        `Run ${id} kept no artifact ${path}; it kept: ${run.artifacts.map((a) => a.path).join(", ") || "nothing"}.`,
      );
    return readFile(this.#artifactPath(caller.orgId, id, known.path));
  }

  /**
   * Cancels a running run, reclaims its shell and deletes its artifacts from the host; the record
   * stays (with no artifacts).
   */
  async teardown(caller: Caller, id: string): Promise<Run> {
    const row = await this.#row(caller, id);
    const controller = this.#cancel.get(id);
    if (controller) {
      controller.abort("stopped");
      await this.db
        .updateTable("runs")
        .set({ status: "cancelled", finished_at: nowIso() })
        .where("id", "=", id)
        .where("status", "=", "running")
        .execute();
    }
    // A cancelled run stops before it keeps anything; wait for it so nothing lands after the delete.
    await this.#running.get(id);
    await this.shells
      .delete(caller, row.shell_id, undefined, { approvalId: undefined })
      .catch(() => undefined);
    const { artifacts, skippedArtifacts } = storedArtifacts(
      (await this.#row(caller, id)).artifacts,
    );
    await rm(this.#artifactDir(caller.orgId, id), { recursive: true, force: true });
    await this.db
      .updateTable("runs")
      .set({ artifacts: JSON.stringify({ kept: [], skipped: skippedArtifacts ?? [] }) })
      .where("id", "=", id)
      .execute();
    await this.#event(caller, id, "run.teardown", {
      shellId: row.shell_id,
      artifactsDeleted: artifacts.length,
    });
    return this.get(caller, id);
  }

  /** Waits for runs in flight (server shutdown). */
  async drain(): Promise<void> {
    for (const controller of this.#cancel.values()) controller.abort("host_restart");
    await Promise.allSettled([...this.#running.values()]);
  }

  async #execute(
    caller: Caller,
    row: Selectable<RunTable>,
    body: RouteBody<"createRun">,
    signal: AbortSignal,
  ): Promise<void> {
    let seq = 0;
    let outputBytes = 0;
    const emit = async (type: RunFrame["type"], data: unknown) => {
      seq += 1;
      const frame: RunFrame = { seq, type, data, time: Date.now() };
      await this.db
        .insertInto("run_frames")
        .values({ run_id: row.id, seq, type, data: JSON.stringify(data), time: frame.time })
        .execute();
      for (const listener of this.#listeners.get(row.id) ?? []) listener(frame);
    };
    const shell = await this.shells.runningSandbox(caller, row.shell_id);
    const resultFile = `${RUNNER_DIR}/result.json`;
    const artifactsFile = `${RUNNER_DIR}/artifacts.txt`;
    let exitCode: number | null = null;
    let killReason: string | null = null;
    let error: string | null = null;
    try {
      await emit("status", { status: "running", shellId: row.shell_id });
      const write = (path: string, data: Uint8Array, mode?: number) =>
        shell.call((b) => b.files.write(shell.shellId, path, data, mode));
      await write(`${RUNNER_DIR}/shells.py`, encoder.encode(PYTHON_HELPER));
      await write(`${RUNNER_DIR}/shells.cjs`, encoder.encode(NODE_HELPER));
      for (const file of body.files ?? []) {
        const data =
          file.encoding === "base64"
            ? Buffer.from(file.content, "base64")
            : encoder.encode(file.content);
        await write(shellPath(file.path), data, file.mode);
      }
      let command = body.command;
      if (body.code !== undefined) {
        await write(`${RUNNER_DIR}/${mainFile(body.language)}`, encoder.encode(body.code));
        command = runCommand(body.language);
      }
      const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      const result = await this.shells.exec(
        caller,
        shell.shellId,
        {
          command: command ?? ["true"],
          env: {
            SHELLS_RESULT: resultFile,
            SHELLS_ARTIFACTS: artifactsFile,
            SHELLS_RUN_ID: row.id,
          },
          timeoutMs: body.timeoutMs ?? RUN_LIMITS.defaultTimeoutMs,
        },
        {
          signal,
          onOutput: async (stream, chunk) => {
            if (outputBytes >= RUN_LIMITS.frameOutputBytes) return;
            outputBytes += chunk.length;
            await emit(stream, decoders[stream].decode(chunk, { stream: true }));
          },
        },
      );
      exitCode = result.exitCode;
      killReason = result.killReason ?? null;
      const structured = await this.#readResult(shell, resultFile);
      if (structured.error) error = structured.error;
      if (structured.present) await emit("result", structured.value);
      // A cancelled run keeps nothing: its teardown is deleting what it would keep.
      const { kept, skipped } = signal.aborted
        ? { kept: [], skipped: [] }
        : await this.#collectArtifacts(caller, row, shell, body.artifacts ?? [], artifactsFile);
      for (const artifact of kept) await emit("artifact", artifact);
      const status = signal.aborted
        ? "cancelled"
        : exitCode === 0 && !killReason
          ? "succeeded"
          : "failed";
      await emit("exit", { exitCode, killReason, status });
      await this.db
        .updateTable("runs")
        .set({
          status,
          exit_code: exitCode,
          kill_reason: killReason,
          result: structured.present ? JSON.stringify(structured.value) : null,
          artifacts: JSON.stringify({ kept, skipped }),
          error,
          finished_at: nowIso(),
        })
        .where("id", "=", row.id)
        .execute();
      await this.#event(caller, row.id, "run.finish", {
        status,
        exitCode,
        killReason,
        artifacts: kept.length,
        artifactsSkipped: skipped.length,
        hasResult: structured.present,
      });
    } catch (failure) {
      error = failure instanceof Error ? failure.message : String(failure);
      await emit("exit", { exitCode, killReason, status: "failed", error });
      await this.db
        .updateTable("runs")
        .set({ status: "failed", error, finished_at: nowIso() })
        .where("id", "=", row.id)
        .execute();
      await this.#event(caller, row.id, "run.finish", { status: "failed", error });
    } finally {
      await this.shells
        .delete(caller, row.shell_id, undefined, { approvalId: undefined })
        .catch((e: unknown) => this.logger.warn({ err: e, runId: row.id }, "run teardown failed"));
    }
  }

  async #readResult(
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
    path: string,
  ): Promise<{ present: boolean; value: unknown; error?: string }> {
    let bytes: Uint8Array;
    try {
      bytes = await shell.call((b) => b.files.read(shell.shellId, path, 8 * 1024 * 1024));
    } catch (error) {
      if (error instanceof AppError && error.code === "file_not_found")
        return { present: false, value: null };
      throw error;
    }
    try {
      return { present: true, value: JSON.parse(new TextDecoder().decode(bytes)) as unknown };
    } catch {
      return { present: false, value: null, error: "the result file does not hold JSON" };
    }
  }

  /**
   * Copies the files a run named (by `shells.artifact()` or by glob) out of its shell onto the host,
   * within the run's quota: sizes are the files' apparent sizes (a sparse file counts whole), each
   * read is capped at what is left, and what does not fit is recorded as skipped with the reason.
   */
  async #collectArtifacts(
    caller: Caller,
    row: Selectable<RunTable>,
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
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
      for (const file of await this.#walk(shell, "/workspace", 6)) {
        if (matches(file.path.replace(/^\/workspace\//, ""))) named.set(file.path, file);
        // Many files times many patterns is work a caller chooses: other callers get turns.
        checked += 1;
        if (checked % 256 === 0) await nextTurn(undefined);
      }
    }
    const kept: Artifact[] = [];
    const skipped: SkippedArtifact[] = [];
    const skip = (path: string, sizeBytes: number, reason: SkippedArtifact["reason"]) => {
      if (skipped.length < RUN_LIMITS.artifactCount) skipped.push({ path, sizeBytes, reason });
    };
    let usedBytes = 0;
    for (const [path, listed] of named) {
      if (!path.startsWith("/workspace/")) continue;
      const relative = path.slice("/workspace/".length);
      if (kept.length >= RUN_LIMITS.artifactCount) {
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
      const room = Math.min(RUN_LIMITS.artifactBytes, this.#artifactQuotaBytes - usedBytes);
      if (info.sizeBytes > room) {
        skip(relative, info.sizeBytes, "quota_exceeded");
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
      const target = this.#artifactPath(caller.orgId, row.id, relative);
      try {
        await mkdir(dirname(target), { recursive: true, mode: 0o700 });
        await writeFile(target, bytes, { mode: 0o600 });
      } catch (error) {
        // The host path must not reach the run record, its frames or the activity history.
        this.logger.warn(
          { err: error, runId: row.id, artifact: relative },
          "could not keep an artifact",
        );
        // Only the message reaches the run record; the cause (with the host path) stays in the log.
        throw new Error(
          `could not keep the artifact ${relative} (a file and a directory of the same name?)`,
          { cause: error },
        );
      }
      usedBytes += bytes.length;
      kept.push({ path: relative, sizeBytes: bytes.length });
    }
    return { kept, skipped };
  }

  async #walk(
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
    dir: string,
    depth: number,
  ): Promise<SandboxFileInfo[]> {
    if (depth < 0) return [];
    let entries: SandboxFileInfo[];
    try {
      entries = await shell.call((b) => b.files.list(shell.shellId, dir));
    } catch {
      return [];
    }
    const files: SandboxFileInfo[] = [];
    for (const entry of entries) {
      if (entry.type === "file") files.push(entry);
      else if (entry.type === "directory")
        files.push(...(await this.#walk(shell, entry.path, depth - 1)));
    }
    return files;
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

  async #row(caller: Caller, id: string): Promise<Selectable<RunTable>> {
    const row = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row) throw new AppError("not_found", `No run ${id}.`, { resource: "run", id });
    return row;
  }

  async #event(caller: Caller, runId: string, action: string, details: Record<string, unknown>) {
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action,
      target: { type: "run", id: runId },
      outcome: "success",
      details,
    });
  }
}
