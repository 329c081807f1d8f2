import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmod,
  chown,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  claimJailUid,
  detectCgroups,
  ensureSeccompProgram,
  JAIL_UID_BANDS,
  releaseJailUid,
  releaseJailUidsOf,
  shellCgroupName,
  ShellCgroup,
  transferJailUid,
  type CgroupHost,
} from "@shells/backend-container";
import type {
  ExecResult,
  KillReason,
  ResolvedResources,
  RuntimeAvailability,
  Snapshot,
} from "@shells/contract";
import {
  readTar,
  SANDBOX_EGRESS_ENV,
  SandboxError,
  unsafeTarEntry,
  writeTar,
  type SandboxBackend,
  type SandboxEgress,
  type SandboxFileInfo,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFiles,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSpec,
  type SandboxTurnRequest,
  type SandboxUsage,
  type SandboxTurnResult,
} from "@shells/sandbox";
import { parseCommand } from "./internal/commands.js";
import { viaEgressProxy } from "./internal/egress-client.js";
import { Jail, missingForJail, STAGE_DIR } from "./internal/jail.js";
import { PythonSnapshots } from "./internal/python-snapshots.js";
import { ShellState } from "./internal/snapshots.js";
import {
  WorkerProcess,
  type TurnAnswer,
  type WasmLanguage,
  type WorkerExec,
  type WorkerOutcome,
} from "./internal/worker-process.js";

const execFileAsync = promisify(execFile);

/** Options of the wasm backend. */
export interface WasmBackendOptions {
  /** Where shells' state (`shells/<id>/workspace`) and the warm pool's directories live. */
  stateDir: string;
  /** Warm interpreters kept ready per language (default: python 1, node 2; 0 turns the pool off). */
  pool?: Partial<Record<WasmLanguage, number>>;
  /**
   * Host-wide registry of the workers' uids (default `/var/lib/shells/wasm-uids`): each shell, and
   * each pooled worker until a shell claims it, runs as a uid of its own from the band
   * `JAIL_UID_BANDS.wasm`, with a group of the same number.
   */
  uidRegistryDir?: string;
  /**
   * Interpreter turns' globals are dropped when the shell had no turn for this long, ms (default
   * 10 minutes, as the control plane's REPL sessions): the next turn starts fresh and says so.
   */
  turnIdleMs?: number;
  /** ...and once they are this old, whatever the traffic, ms (default 60 minutes). */
  turnLifetimeMs?: number;
  /**
   * Whether Python workers start from a Pyodide memory snapshot (default true); false: every
   * Python worker runs Pyodide's full start-up.
   */
  pythonSnapshot?: boolean;
}

/**
 * Memory the interpreter itself needs before guest code allocates anything, added to the shell's
 * `memoryMb` for the worker's cgroup: Pyodide's runtime and standard library take ~160 MB of RSS,
 * node plus QuickJS ~60 MB.
 */
const BASELINE_MB: Record<WasmLanguage, number> = { python: 224, node: 96 };

const MB = 1024 * 1024;

/** Threads a worker needs (node's own, the engine thread, libuv's pool); guests cannot fork. */
const WORKER_PIDS = 64;

/**
 * CPU time an interrupted exec may spend unwinding before its worker is killed and replaced. It is
 * counted in the worker's CPU time, not the wall clock: on a host starved by other work the
 * interpreter may get no CPU for seconds, and that must not cost a shell its interpreter state.
 */
const INTERRUPT_GRACE_CPU_MS = 1500;

/** The wall-clock bound on unwinding, whatever the CPU count says (a worker blocked, not busy). */
const INTERRUPT_GRACE_WALL_MS = 15_000;

/** Output a turn may write before it is interrupted (the answer is returned whole, not streamed). */
const TURN_OUTPUT_BYTES = 1024 * 1024;

/**
 * How long a refill waits after a claim before it starts a worker, so that starting a worker
 * (a node process and its interpreter, seconds of CPU for Pyodide) does not compete with the
 * claimed shell's first exec.
 */
const REFILL_DELAY_MS = 400;

/** Throwaway execs a pooled worker runs through the protocol before it joins the pool. */
const POOL_WARM_UP_EXECS = 5;

/** A shell as the backend keeps it on disk (`shells/<id>/shell.json`). */
interface ShellRecord {
  shellId: string;
  language: WasmLanguage;
  resources: ResolvedResources;
  env: Record<string, string>;
  state: "running" | "stopped";
  /** Name of the worker's cgroup (it was named when the worker was started, maybe in the pool). */
  cgroup: string;
  /**
   * The cgroup's CPU counter when the shell claimed it: a pooled worker's warm-up ran before the
   * shell existed and is not the shell's. Absent in records written before it was kept.
   */
  cpuBase?: { epoch: string; cpuUsec: number };
  /** Highest snapshot sequence number used, so a re-taken name never reuses an archive name. */
  snapshotSeq?: number;
  /** The shell's own host uid (and gid), claimed in the uid registry by the shell's directory. */
  uid?: number;
  /** `internet` when the proxy variables are set in every exec; absent in older records (sealed). */
  network?: SandboxSpec["network"];
  /** The shell's egress proxy, where its workers carry guest HTTP requests; none: no way out. */
  egress?: SandboxEgress;
}

/** A worker and the cgroup that bounds it. */
interface LiveWorker {
  process: WorkerProcess;
  cgroup: ShellCgroup;
  /** The host uid and gid the worker runs as. */
  uid: number;
  /** OOM kills the cgroup had counted when this worker started. */
  oomKillsAtStart: number;
  /** Set when the shell is stopped on purpose: requests cut off by the worker's end report it. */
  endReason?: KillReason;
  /** When the interpreter turns' namespace was made and last used (none before the first turn). */
  turns?: { startedAt: number; lastAt: number };
}

/** A warm worker waiting in the pool, its workspace under `pool/<token>`. */
interface PooledWorker extends LiveWorker {
  workspace: string;
}

/**
 * The `wasm` runtime class: `python` on Pyodide and `node` on QuickJS, each shell's interpreter in
 * its own jailed worker process (see `Jail`) bounded by a cgroup, its files in the shell's persisted
 * `/workspace`. Execs are interpreter invocations (`python3 -c`, `python3 FILE`, `node -e`,
 * `node FILE`), not a POSIX shell. Warm pools of loaded interpreters make a new shell's first exec
 * fast.
 */
export class WasmBackend implements SandboxBackend {
  readonly name = "wasm";
  /** Interpreters compiled to WebAssembly: the python and node presets only. */
  readonly languages = ["python", "node"] as const;
  /**
   * No sockets at all: the engines offer the guest no socket API and the worker's jail has no
   * network. `localhost` (loopback only) therefore holds as `sealed` does, and is the same shell:
   * nothing in it can listen on or dial the loopback (the ports API answers that the backend cannot
   * reach ports). `internet`: guest HTTP (QuickJS `fetch`, Python `urllib.request`) goes over the
   * worker's protocol to the backend, which carries it to the shell's egress proxy and nowhere
   * else; a sealed or localhost shell given the proxy (service bindings) reaches it the same way.
   */
  readonly networkModes = ["sealed", "localhost", "internet"] as const;
  private readonly stateDir: string;
  private readonly uidRegistryDir: string;
  private readonly poolSize: Record<WasmLanguage, number>;
  private readonly turnIdleMs: number;
  private readonly turnLifetimeMs: number;
  private readonly missing: string | null;
  private readonly cgroups: CgroupHost | string;
  private readonly cgroupParent: string;
  private jail: Jail | null = null;
  /** Null when Python workers start without a memory snapshot. */
  private readonly pythonSnapshots: PythonSnapshots | null;
  private swept = false;
  private readonly workers = new Map<string, LiveWorker>();
  private readonly pools: Record<WasmLanguage, PooledWorker[]> = { python: [], node: [] };
  private readonly filling: Record<WasmLanguage, number> = { python: 0, node: 0 };
  private readonly fills: Record<WasmLanguage, Promise<void> | null> = { python: null, node: null };
  private readonly refillTimers: Record<WasmLanguage, NodeJS.Timeout | null> = {
    python: null,
    node: null,
  };
  private closed = false;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(options: WasmBackendOptions) {
    this.stateDir = options.stateDir.replace(/\/+$/, "");
    this.uidRegistryDir = options.uidRegistryDir ?? "/var/lib/shells/wasm-uids";
    this.poolSize = { python: options.pool?.python ?? 1, node: options.pool?.node ?? 2 };
    this.turnIdleMs = options.turnIdleMs ?? 10 * 60 * 1000;
    this.turnLifetimeMs = options.turnLifetimeMs ?? 60 * 60 * 1000;
    this.cgroups = detectCgroups();
    this.cgroupParent = "shells-wasm";
    this.missing = missingForJail() ?? (typeof this.cgroups === "string" ? this.cgroups : null);
    this.pythonSnapshots =
      options.pythonSnapshot === false
        ? null
        : new PythonSnapshots(join(this.stateDir, "pyodide-snapshots"));
  }

  async availability(): Promise<RuntimeAvailability[]> {
    return [
      {
        runtime: "wasm",
        available: this.missing === null,
        backend: this.name,
        reason: this.missing,
      },
    ];
  }

  /**
   * Loads the pools' interpreters now and resolves when each pool is full, so the first shells of a
   * process (or a test run) are created warm. Progress goes to `log`.
   */
  async warm(
    log: (line: string) => void = () => undefined,
    languages: readonly WasmLanguage[] = ["python", "node"],
  ): Promise<void> {
    this.requireAvailable();
    await this.sweepOrphanCgroups();
    await Promise.all(
      languages.map(async (language) => {
        const started = Date.now();
        await this.refill(language);
        if (this.poolSize[language] > 0)
          log(`${language}: ${this.pools[language].length} warm after ${Date.now() - started} ms`);
      }),
    );
  }

  async create(spec: SandboxSpec): Promise<SandboxInfo> {
    this.requireAvailable();
    if (spec.language !== "python" && spec.language !== "node")
      throw new SandboxError(
        "unavailable",
        `The wasm runtime runs the python and node presets; ${spec.language} needs the container runtime.`,
        { runtime: "wasm", language: spec.language, presets: ["python", "node"] },
      );
    if (!this.networkModes.some((mode) => mode === spec.network))
      throw new SandboxError(
        "unsupported",
        `Network mode ${spec.network} is not offered by the wasm runtime (sealed, localhost and internet are).`,
        { network: spec.network },
      );
    if (spec.network === "internet" && !spec.egress)
      throw new SandboxError(
        "unsupported",
        "Network mode internet needs the shell's egress proxy, which was not given.",
        { network: spec.network },
      );
    const language: WasmLanguage = spec.language;
    const dir = this.shellDir(spec.shellId);
    await mkdir(this.shellsRoot(), { recursive: true, mode: 0o711 });
    await chmod(this.shellsRoot(), 0o711);
    await mkdir(dir, { mode: 0o711 });
    const workspace = join(dir, "workspace");
    const pooled = this.pools[language].shift();
    this.scheduleRefill(language);
    let live: LiveWorker;
    if (pooled && pooled.process.running) {
      // The pooled worker's uid becomes the shell's (its claim is handed over before the pool
      // directory goes, or it would look stale). Its /workspace is a bind of its pool directory;
      // renaming that directory keeps the bind (it follows the directory), so the directory
      // becomes the shell's state.
      await transferJailUid(this.uidRegistryDir, pooled.uid, pooled.workspace, dir);
      await rename(pooled.workspace, workspace);
      await this.relimit(pooled.cgroup, this.limits(language, spec.resources));
      pooled.process.setDiskLimit(spec.resources.diskMb * MB);
      live = pooled;
    } else {
      if (pooled) await this.discard(pooled);
      const uid = await claimJailUid(this.uidRegistryDir, JAIL_UID_BANDS.wasm, dir);
      await this.makeWorkspace(workspace, uid);
      live = await this.startWorker(language, workspace, spec.resources, uid);
      live.process.setDiskLimit(spec.resources.diskMb * MB);
    }
    const record: ShellRecord = {
      shellId: spec.shellId,
      language,
      resources: spec.resources,
      env: spec.env,
      state: "running",
      cgroup: live.cgroup.name,
      uid: live.uid,
      network: spec.network,
      ...(spec.egress ? { egress: spec.egress } : {}),
    };
    this.connect(live, record);
    this.workers.set(spec.shellId, live);
    const claimed = await live.cgroup.usage().catch(() => null);
    await this.writeRecord({
      ...record,
      ...(claimed ? { cpuBase: { epoch: claimed.epoch, cpuUsec: claimed.cpuUsec } } : {}),
    });
    return this.info(spec.shellId, "running");
  }

  async exec(
    shellId: string,
    request: SandboxExecRequest,
    options: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    const record = await this.record(shellId);
    if (record.state !== "running")
      throw new SandboxError("not_running", `Shell ${shellId}'s sandbox is stopped.`);
    const program = parseCommand(record.language, request.command);
    const started = Date.now();
    const live = await this.liveWorker(record);
    const workerExec: WorkerExec = {
      ...program,
      env: { ...this.envOf(record), ...request.env },
      cwd: request.cwd,
      stdin:
        request.stdin === undefined
          ? null
          : typeof request.stdin === "string"
            ? new TextEncoder().encode(request.stdin)
            : request.stdin,
    };

    const run = await this.guarded(shellId, live, request, options, (onOutput, stop) =>
      live.process.exec(workerExec, onOutput, stop),
    );
    return {
      exitCode: run.exitCode,
      stdout: run.stdout,
      stderr: run.stderr,
      durationMs: Date.now() - started,
      ...(run.killReason ? { killReason: run.killReason } : {}),
      ...(run.truncated ? { truncated: run.truncated } : {}),
    };
  }

  /**
   * Runs an interpreter turn in the worker's persistent namespace: globals stay across turns
   * (execs keep running in fresh ones). A turn past its wall clock is interrupted and answers a
   * `TimeoutError`; the namespace stays unless the worker had to be killed.
   */
  async interpreterTurn(shellId: string, request: SandboxTurnRequest): Promise<SandboxTurnResult> {
    const record = await this.record(shellId);
    if (record.state !== "running")
      throw new SandboxError("not_running", `Shell ${shellId}'s sandbox is stopped.`);
    if (request.language !== record.language)
      throw new SandboxError(
        "unsupported",
        `Wasm ${record.language} shells run ${record.language} turns only, not ${request.language}.`,
        { language: request.language },
      );
    const live = await this.liveWorker(record);
    // Globals past their idle TTL or lifetime are dropped before the turn, which then reports a
    // fresh start, as a REPL session that ended would.
    const now = Date.now();
    const expired =
      live.turns !== undefined &&
      (now - live.turns.lastAt >= this.turnIdleMs ||
        now - live.turns.startedAt >= this.turnLifetimeMs);
    const run = await this.guarded(
      shellId,
      live,
      { timeoutMs: request.timeoutMs, maxOutputBytes: TURN_OUTPUT_BYTES },
      {},
      (onOutput, stop) =>
        live.process.turn(
          request.code,
          { ...this.envOf(record), ...request.env },
          onOutput,
          stop,
          expired,
        ),
    );
    const answer = run.answer;
    if (answer?.fresh) live.turns = { startedAt: now, lastAt: Date.now() };
    else if (answer && live.turns) live.turns.lastAt = Date.now();
    const ended = (name: string, message: string) => ({
      stdout: run.stdout,
      stderr: run.stderr,
      value: null,
      error: { name, message, traceback: "" },
      restarted: answer?.fresh ?? false,
    });
    if (run.killReason === "wall_clock")
      return ended(
        "TimeoutError",
        run.skipped
          ? `The turn waited past its ${request.timeoutMs} ms wall clock behind other work on this shell and did not run; the interpreter's globals are kept.`
          : answer
            ? `The turn ran past its ${request.timeoutMs} ms wall clock and was interrupted; the interpreter's globals are kept.`
            : `The turn ran past its ${request.timeoutMs} ms wall clock; the interpreter was stopped and the next turn starts a fresh one.`,
      );
    if (run.killReason === "output_limit")
      return ended(
        "OutputLimitError",
        `The turn wrote more than ${TURN_OUTPUT_BYTES} bytes and was interrupted.`,
      );
    if (!answer)
      return ended(
        "InterpreterExited",
        `The interpreter ended (${run.killReason ?? "it crashed"}); its state is gone and the next turn starts a fresh one.`,
      );
    return {
      stdout: run.stdout,
      stderr: run.stderr,
      value: answer.value,
      error: answer.error,
      restarted: answer.fresh,
    };
  }

  /**
   * Runs one request on a shell's worker under the exec's bounds: output is collected up to its
   * limit, and the guest code is ended at the wall clock, on output overflow or on abort — an
   * interrupt first (the interpreter survives), the worker's death if the code does not unwind in
   * time (it is replaced on the next exec).
   */
  private async guarded(
    shellId: string,
    live: LiveWorker,
    request: Pick<SandboxExecRequest, "timeoutMs" | "maxOutputBytes">,
    options: SandboxExecOptions,
    start: (
      onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void,
      stop: AbortSignal,
    ) => Promise<WorkerOutcome>,
  ): Promise<{
    exitCode: number;
    stdout: string;
    stderr: string;
    killReason?: KillReason;
    truncated?: boolean;
    answer?: TurnAnswer;
    /** The request ended while still queued behind others: it never ran. */
    skipped?: boolean;
  }> {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let outputBytes = 0;
    let truncated = false;
    let killReason: KillReason | undefined;
    const stop = new AbortController();
    let stopUnwindWatch = () => undefined as void;
    const end = (reason: KillReason) => {
      if (killReason) return;
      killReason = reason;
      stop.abort();
      stopUnwindWatch = killUnlessUnwound(live, stop.signal);
    };
    const onOutput = (stream: "stdout" | "stderr", chunk: Uint8Array) => {
      if (truncated) return;
      let bytes = Buffer.from(chunk);
      if (outputBytes + bytes.length > request.maxOutputBytes) {
        bytes = bytes.subarray(0, request.maxOutputBytes - outputBytes);
        truncated = true;
        end("output_limit");
      }
      outputBytes += bytes.length;
      if (bytes.length === 0) return;
      (stream === "stdout" ? stdout : stderr).push(bytes);
      void options.onOutput?.(stream, bytes);
    };
    const wallClock = setTimeout(() => end("wall_clock"), request.timeoutMs);
    const onAbort = () => {
      const reason: unknown = options.signal?.reason;
      end(typeof reason === "string" ? (reason as KillReason) : "stopped");
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });

    const outcome = await start(onOutput, stop.signal);
    clearTimeout(wallClock);
    stopUnwindWatch();
    options.signal?.removeEventListener("abort", onAbort);

    let exitCode: number;
    if (outcome.kind === "done") {
      exitCode = outcome.exitCode;
      // As the container backend does: a command that failed after the disk filled up ends `disk`.
      if (outcome.diskFull && exitCode !== 0 && !killReason) killReason = "disk";
    } else if (outcome.kind === "skipped")
      exitCode = 130; // ended while queued: killReason says why
    else {
      // The worker died under the request: killed on purpose (killReason is set), or by the
      // cgroup's OOM killer; it is replaced on the next exec.
      exitCode = 137;
      if (!killReason && live.endReason) killReason = live.endReason;
      if (!killReason) {
        if ((await readOomKills(live.cgroup)) > live.oomKillsAtStart) killReason = "oom";
        else
          stderr.push(
            Buffer.from(
              `the interpreter worker ended unexpectedly: ${live.process.diagnostics()}\n`,
            ),
          );
      }
      if (this.workers.get(shellId) === live) this.workers.delete(shellId);
    }
    if (killReason && exitCode === 0) exitCode = 130;
    return {
      exitCode,
      stdout: Buffer.concat(stdout).toString("utf8"),
      stderr: Buffer.concat(stderr).toString("utf8"),
      ...(killReason ? { killReason } : {}),
      ...(truncated ? { truncated } : {}),
      ...(outcome.kind === "done" && outcome.answer ? { answer: outcome.answer } : {}),
      ...(outcome.kind === "skipped" ? { skipped: true } : {}),
    };
  }

  async stop(shellId: string, reason: KillReason = "stopped"): Promise<SandboxInfo> {
    const record = await this.record(shellId);
    await this.stopWorker(shellId, reason);
    if (record.state !== "stopped") await this.writeRecord({ ...record, state: "stopped" });
    return this.info(shellId, "stopped");
  }

  async start(shellId: string): Promise<SandboxInfo> {
    const record = await this.record(shellId);
    if (record.state !== "running") await this.writeRecord({ ...record, state: "running" });
    return this.info(shellId, "running");
  }

  async restart(shellId: string): Promise<SandboxInfo> {
    const record = await this.record(shellId);
    await this.stopWorker(shellId);
    await this.writeRecord({ ...record, state: "running" });
    await this.liveWorker({ ...record, state: "running" });
    return this.info(shellId, "running");
  }

  spawn(): Promise<SandboxProcess> {
    return Promise.reject(
      new SandboxError(
        "unsupported",
        "Wasm shells have no long-lived processes or terminals; use exec with python3 or node.",
      ),
    );
  }

  /**
   * File operations, carried out by the shell's worker process inside its jail: a path resolves
   * in the guest's own view (`/workspace` and `/tmp`), every symlink on the way is followed there
   * and the result must stay under those roots, so no path or link leads to the host.
   */
  readonly files: SandboxFiles = {
    stat: async (shellId, path) =>
      (await this.fileRequest(shellId, { op: "stat", path })) as SandboxFileInfo,
    list: async (shellId, path) =>
      (await this.fileRequest(shellId, { op: "list", path })) as SandboxFileInfo[],
    read: async (shellId, path, maxBytes) =>
      Buffer.from(
        (await this.fileRequest(shellId, { op: "read", path, maxBytes })) as string,
        "base64",
      ),
    write: async (shellId, path, data, mode) =>
      (await this.fileRequest(shellId, {
        op: "write",
        path,
        data: Buffer.from(data).toString("base64"),
        ...(mode === undefined ? {} : { mode }),
      })) as SandboxFileInfo,
    remove: async (shellId, path, recursive) => {
      await this.fileRequest(shellId, { op: "remove", path, recursive });
    },
    exportTar: async (shellId, path, maxBytes) => {
      const entries = (await this.fileRequest(shellId, { op: "export", path, maxBytes })) as {
        name: string;
        type: "file" | "directory" | "symlink";
        mode: number;
        linkName: string;
        data: string;
      }[];
      const archive = await writeTar(
        entries.map((entry) => ({ ...entry, data: Buffer.from(entry.data, "base64") })),
      );
      if (archive.length > maxBytes)
        throw new SandboxError(
          "failed",
          `the archive of ${path} is larger than ${maxBytes} bytes`,
          {
            path,
            limitBytes: maxBytes,
            tooLarge: true,
          },
        );
      return archive;
    },
    importTar: async (shellId, path, tar) => {
      const entries = await readTar(tar);
      const byName = new Map(entries.map((entry) => [entry.name.replace(/\/$/, ""), entry]));
      const unpacked = [];
      for (const entry of entries) {
        const problem = unsafeTarEntry(entry);
        if (problem) throw new SandboxError("unsupported", `unsafe archive: ${problem}`, { path });
        const name = entry.name.replace(/\/$/, "");
        if (name === "" || name === ".") continue;
        // A hard link becomes a copy of the file it names (checked to be inside the archive).
        const source = entry.type === "hardlink" ? byName.get(entry.linkName) : entry;
        if (
          !source ||
          (source.type !== "file" && source.type !== "directory" && source.type !== "symlink")
        )
          throw new SandboxError(
            "unsupported",
            `unsafe archive: ${entry.name} links to nothing it holds`,
            { path },
          );
        unpacked.push({
          name,
          type: source.type,
          mode: entry.mode,
          linkName: source.type === "symlink" ? entry.linkName : "",
          data: source.type === "file" ? Buffer.from(source.data).toString("base64") : "",
        });
      }
      await this.fileRequest(shellId, { op: "import", path, entries: unpacked });
    },
  };

  /** Sends a file request to the shell's worker (started when it has none). */
  private async fileRequest(
    shellId: string,
    request: { op: string; path: string } & Record<string, unknown>,
  ): Promise<unknown> {
    const record = await this.record(shellId);
    if (record.state !== "running")
      throw new SandboxError("not_running", `Shell ${shellId}'s sandbox is stopped.`);
    const live = await this.liveWorker(record);
    return live.process.file(request);
  }

  /**
   * Archives the shell's `/workspace` (its whole persisted state) as a restore point. A running
   * worker is frozen (cgroup freezer) for the archiving, so an exec or turn in flight is held
   * where it is and the archive is one instant's state; it runs on afterwards, globals intact.
   */
  async snapshot(shellId: string, name: string): Promise<Snapshot> {
    return this.locked(shellId, async () => {
      const record = await this.record(shellId);
      const meta = await this.state(shellId).take(name, record.snapshotSeq ?? 0, (body) =>
        this.stillWhile(shellId, body),
      );
      await this.writeRecord({ ...record, snapshotSeq: meta.seq });
      return { name: meta.name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
    });
  }

  async listSnapshots(shellId: string): Promise<Snapshot[]> {
    await this.record(shellId);
    return (await this.state(shellId).snapshots()).map(({ name, sizeBytes, createdAt }) => ({
      name,
      sizeBytes,
      createdAt,
    }));
  }

  /**
   * Returns `/workspace` to a snapshot: the worker is stopped (requests in flight end `stopped`),
   * the snapshot unpacked beside the workspace and swapped in, and a running shell gets a fresh
   * worker on it (interpreter globals do not survive a restore).
   */
  async restore(shellId: string, name: string): Promise<Snapshot> {
    return this.locked(shellId, async () => {
      const record = await this.record(shellId);
      const state = this.state(shellId);
      const meta = (await state.snapshots()).find((s) => s.name === name);
      if (!meta)
        throw new SandboxError(
          "snapshot_not_found",
          `shell ${shellId} has no snapshot named ${JSON.stringify(name)}`,
        );
      await this.replaceWorkspace(record, (into, uid) =>
        state.restore(meta, { uid, gid: uid }, into),
      );
      return { name: meta.name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
    });
  }

  /**
   * A wasm shell's "operating system" is its interpreter: the Pyodide or QuickJS build the server
   * ships, its loaded modules, the interpreter turns' globals and the jail's private `/tmp`. A
   * reinstall ends the worker and hands the shell a fresh one, which runs the interpreter build
   * installed when it started: a warm one from the pool where there is one (the workspace's
   * content is moved into its directory, see `ShellState.carry`), else a cold one. `/workspace`,
   * the shell's only persisted state, is kept as it is.
   */
  async reinstallOs(shellId: string): Promise<SandboxInfo> {
    return this.locked(shellId, async () => {
      const record = await this.record(shellId);
      await this.replaceWorkspace(record, async (into, uid) => {
        if (into !== undefined) await this.state(shellId).carry({ uid, gid: uid }, into);
      });
      return this.info(shellId, record.state);
    });
  }

  async wipeState(shellId: string): Promise<SandboxInfo> {
    return this.locked(shellId, async () => {
      const record = await this.record(shellId);
      // The worker is stopped first so guest code cannot race the wipe; an empty directory is
      // swapped in for the workspace, and a fresh worker runs on it.
      await this.replaceWorkspace(record, (into, uid) =>
        this.state(shellId).empty({ uid, gid: uid }, into),
      );
      return this.info(shellId, record.state);
    });
  }

  /**
   * Stops the shell's worker and puts a new workspace under the shell (`replace` fills it and
   * swaps it in). A running shell gets a fresh worker on it: a warm one from the pool where there
   * is one — `replace` is given the pooled worker's empty directory, whose bind follows it into
   * place, so a restore or wipe costs no interpreter load — else a cold one. `replace` is told
   * the uid the new files must belong to: the pooled worker's, which the shell then takes over
   * (its own is released once its old worker has ended), or the shell's own.
   */
  private async replaceWorkspace(
    record: ShellRecord,
    replace: (into: string | undefined, uid: number) => Promise<void>,
  ): Promise<void> {
    let pooled = record.state === "running" ? this.pools[record.language].shift() : undefined;
    if (pooled) this.scheduleRefill(record.language);
    if (pooled && !pooled.process.running) {
      await this.discard(pooled);
      pooled = undefined;
    }
    await this.stopWorker(record.shellId);
    const dir = this.shellDir(record.shellId);
    // The claim is handed over before `replace` moves the pool directory away (which would leave
    // it looking stale).
    if (pooled) await transferJailUid(this.uidRegistryDir, pooled.uid, pooled.workspace, dir);
    try {
      await replace(pooled?.workspace, pooled?.uid ?? (await this.shellUid(record)));
    } catch (error) {
      if (pooled) {
        await this.discard(pooled);
        await releaseJailUid(this.uidRegistryDir, pooled.uid, dir);
      }
      throw error;
    }
    if (!pooled) {
      if (record.state === "running") await this.liveWorker(record);
      return;
    }
    await this.relimit(pooled.cgroup, this.limits(record.language, record.resources));
    pooled.process.setDiskLimit(record.resources.diskMb * MB);
    this.connect(pooled, record);
    this.workers.set(record.shellId, pooled);
    // The shell now runs in the pooled worker's cgroup and as its uid; its old cgroup goes, and
    // its old uid once nothing in that cgroup runs as it any more.
    if (typeof this.cgroups !== "string") {
      const old = new ShellCgroup(this.cgroups, this.cgroupParent, record.cgroup);
      await old.killAll().catch(() => undefined);
      await old.remove().catch(() => undefined);
    }
    if (record.uid !== undefined && record.uid !== pooled.uid)
      await releaseJailUid(this.uidRegistryDir, record.uid, dir);
    const claimed = await pooled.cgroup.usage().catch(() => null);
    await this.writeRecord({
      ...record,
      cgroup: pooled.cgroup.name,
      uid: pooled.uid,
      ...(claimed ? { cpuBase: { epoch: claimed.epoch, cpuUsec: claimed.cpuUsec } } : {}),
    });
  }

  /**
   * Settles what a crash of the control plane cut: a restore's swap is finished or undone, and
   * archives no snapshot names (a snapshot cut before its commit) and temporaries are removed.
   */
  async recover(): Promise<void> {
    let ids: string[];
    try {
      ids = await readdir(this.shellsRoot());
    } catch {
      return;
    }
    for (const id of ids) {
      const dir = this.shellDir(id);
      await rm(join(dir, "shell.json.tmp"), { force: true });
      await new ShellState(dir).settle();
    }
  }

  async destroy(shellId: string): Promise<void> {
    let record: ShellRecord | null = null;
    try {
      record = await this.record(shellId);
    } catch {
      // already gone: still reclaim what a crash may have left
    }
    await this.stopWorker(shellId);
    if (record && typeof this.cgroups !== "string") {
      const cgroup = new ShellCgroup(this.cgroups, this.cgroupParent, record.cgroup);
      await cgroup.killAll().catch(() => undefined);
      await cgroup.remove().catch(() => undefined);
    }
    // Nothing runs as the shell's uid any more: it goes back to the registry.
    await releaseJailUidsOf(this.uidRegistryDir, this.shellDir(shellId));
    await rm(this.shellDir(shellId), { recursive: true, force: true });
  }

  /**
   * The worker cgroup's counters while the shell runs: CPU time since the shell claimed the worker
   * (a pool's warm-up is left out), memory now. Null while stopped.
   */
  async usage(shellId: string): Promise<SandboxUsage | null> {
    if (typeof this.cgroups === "string") return null;
    let record: ShellRecord;
    try {
      record = await this.record(shellId);
    } catch {
      return null;
    }
    if (record.state !== "running") return null;
    const usage = await new ShellCgroup(this.cgroups, this.cgroupParent, record.cgroup)
      .usage()
      .catch(() => null);
    if (!usage) return null;
    const base = record.cpuBase?.epoch === usage.epoch ? record.cpuBase.cpuUsec : 0;
    return { ...usage, cpuUsec: Math.max(0, usage.cpuUsec - base) };
  }

  async list(): Promise<SandboxInfo[]> {
    let ids: string[];
    try {
      ids = await readdir(this.shellsRoot());
    } catch {
      return [];
    }
    const infos: SandboxInfo[] = [];
    for (const id of ids) {
      try {
        const record = await this.record(id);
        infos.push(this.info(id, record.state));
      } catch {
        // a half-created or half-destroyed shell: not listed
      }
    }
    return infos;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const language of ["python", "node"] as const)
      clearTimeout(this.refillTimers[language] ?? undefined);
    // A fill in flight discards what it started once it sees `closed`; wait for it, or its worker's
    // cgroup outlives this backend (the sweep below skips groups that still hold processes).
    await Promise.all([this.fills.python, this.fills.node]);
    // Warm workers belong to no shell: they go. Shells' workers end with this process (their
    // jails die with their parent); their state stays and the next exec starts a new worker.
    const pooled = [...this.pools.python, ...this.pools.node];
    this.pools.python = [];
    this.pools.node = [];
    await Promise.all(pooled.map((worker) => this.discard(worker)));
    const live = [...this.workers.values()];
    this.workers.clear();
    await Promise.all(live.map((worker) => worker.process.kill()));
    // Whatever a predecessor killed mid-flight left, now that its processes are surely gone.
    this.swept = false;
    await this.sweepOrphanCgroups().catch(() => undefined);
  }

  /**
   * Removes the worker cgroups of this state dir that no shell record names and no process is in:
   * what a control plane killed mid-flight (a pool worker, a half-made shell) left behind. Names carry
   * a hash of the state dir, so another backend's groups are never touched.
   */
  private async sweepOrphanCgroups(): Promise<void> {
    if (this.swept || typeof this.cgroups === "string") return;
    this.swept = true;
    const suffix = shellCgroupName(this.stateDir, "").slice(1);
    const parentDir =
      this.cgroups.version === 2
        ? join(this.cgroups.root, this.cgroupParent)
        : join(this.cgroups.pids, this.cgroupParent);
    let names: string[];
    try {
      names = (await readdir(parentDir)).filter((n) => n.startsWith("w-") && n.endsWith(suffix));
    } catch {
      return; // no parent group yet: nothing was ever left
    }
    const named = new Set<string>();
    for (const info of await this.list()) {
      const record = await this.record(info.shellId).catch(() => null);
      if (record) named.add(record.cgroup);
    }
    for (const name of names) {
      if (named.has(name)) continue;
      const cgroup = new ShellCgroup(this.cgroups, this.cgroupParent, name);
      if ((await cgroup.members().catch(() => [0])).length === 0)
        await cgroup.remove().catch(() => undefined);
    }
  }

  private requireAvailable(): void {
    if (this.missing !== null)
      throw new SandboxError("unavailable", `The wasm runtime is unavailable: ${this.missing}`, {
        runtime: "wasm",
      });
  }

  /** The shell's worker, started (cold) when it has none: after a stop, a crash or a restart. */
  private async liveWorker(record: ShellRecord): Promise<LiveWorker> {
    const existing = this.workers.get(record.shellId);
    if (existing?.process.running) return existing;
    const live = await this.startWorker(
      record.language,
      join(this.shellDir(record.shellId), "workspace"),
      record.resources,
      await this.shellUid(record),
      record.cgroup,
    );
    live.process.setDiskLimit(record.resources.diskMb * MB);
    this.connect(live, record);
    this.workers.set(record.shellId, live);
    return live;
  }

  /**
   * Routes a worker's guest HTTP requests to the shell's egress proxy (its unix socket; the proxy
   * decides, records and injects binding secrets). A shell with no proxy has no way out: its
   * requests fail as on a host without a network.
   */
  private connect(live: LiveWorker, record: ShellRecord): void {
    const egress = record.egress;
    live.process.onHttp = egress ? (request) => viaEgressProxy(egress.socketPath, request) : null;
  }

  /** The environment of the shell's execs and turns: an `internet` shell's proxy variables first. */
  private envOf(record: ShellRecord): Record<string, string> {
    return { ...(record.network === "internet" ? SANDBOX_EGRESS_ENV : {}), ...record.env };
  }

  /**
   * The shell's own uid, for a worker about to start on its workspace. A record written before
   * shells had one gets one now. A workspace that belongs to another uid (the uid all workers once
   * shared, or a pooled worker's after a crash cut its handover before the record named it) is
   * handed to the shell's, so the worker can write its files.
   */
  private async shellUid(record: ShellRecord): Promise<number> {
    const dir = this.shellDir(record.shellId);
    const workspace = join(dir, "workspace");
    if (record.uid === undefined) {
      record.uid = await claimJailUid(this.uidRegistryDir, JAIL_UID_BANDS.wasm, dir);
      await this.writeRecord(record);
    }
    const uid = record.uid;
    const owner = await stat(workspace).then(
      (s) => s.uid,
      () => uid,
    );
    if (owner !== uid)
      await execFileAsync("chown", ["-R", "--no-dereference", `${uid}:${uid}`, workspace]);
    return uid;
  }

  private async stopWorker(shellId: string, reason: KillReason = "stopped"): Promise<void> {
    const live = this.workers.get(shellId);
    this.workers.delete(shellId);
    if (!live) return;
    live.endReason = reason;
    await live.process.kill();
  }

  /** Starts a jailed worker on a workspace and waits until its interpreter is loaded. */
  private async startWorker(
    language: WasmLanguage,
    workspace: string,
    resources: ResolvedResources,
    uid: number,
    cgroupName = shellCgroupName(this.stateDir, `w-${randomBytes(6).toString("hex")}`),
  ): Promise<LiveWorker> {
    if (typeof this.cgroups === "string") throw new SandboxError("unavailable", this.cgroups);
    const cgroup = new ShellCgroup(this.cgroups, this.cgroupParent, cgroupName);
    await cgroup.create(this.limits(language, resources));
    // A control plane that died during a snapshot left the group frozen: a worker joining it
    // would never run (and the dead one's leftovers get to end).
    await cgroup.thaw();
    // A worker that does not come up (a jail that fails, a control plane closing meanwhile) leaves
    // no cgroup behind: the next start of a shell's worker makes it again.
    const abandon = async () => {
      await cgroup.killAll().catch(() => undefined);
      await cgroup.remove().catch(() => undefined);
    };
    let process: WorkerProcess;
    let oomKillsAtStart: number;
    try {
      oomKillsAtStart = await readOomKills(cgroup);
      const seccompProgram = await ensureSeccompProgram(this.stateDir).catch((error: unknown) => {
        throw new SandboxError(
          "unavailable",
          `The wasm runtime is unavailable: its seccomp policy could not be built: ${(error as Error).message}`,
          { runtime: "wasm" },
          { cause: error },
        );
      });
      if (!this.jail) {
        await mkdir(STAGE_DIR, { recursive: true, mode: 0o755 });
        this.jail = new Jail();
      }
      // Python starts from Pyodide's memory snapshot (made once, by the first Python worker's start).
      const pythonSnapshot =
        language === "python" ? ((await this.pythonSnapshots?.ensure()) ?? null) : null;
      process = new WorkerProcess(
        this.jail.command({
          language,
          workspace,
          uid,
          gid: uid,
          cgroupProcs: cgroup.procsFiles,
          seccompProgram,
          pythonSnapshot,
        }),
        { PATH: "/usr/bin:/bin" },
      );
    } catch (error) {
      await abandon();
      throw error;
    }
    try {
      await process.ready;
    } catch (error) {
      await abandon();
      throw new SandboxError(
        "failed",
        `The ${language} interpreter did not start: ${process.diagnostics()}`,
        {},
        { cause: error },
      );
    }
    return { process, cgroup, uid, oomKillsAtStart };
  }

  /**
   * Writes a claimed pool worker's limits. On v1 the memory+swap limit may never be below the
   * memory limit, so it is raised first (a write that would lower it fails and is redone after).
   */
  private async relimit(cgroup: ShellCgroup, resources: ResolvedResources): Promise<void> {
    if (typeof this.cgroups !== "string" && this.cgroups.version === 1)
      await writeFile(
        `${this.cgroups.memory}/${this.cgroupParent}/${cgroup.name}/memory.memsw.limit_in_bytes`,
        String(resources.memoryMb * 1024 * 1024),
      ).catch(() => undefined);
    await cgroup.create(resources);
  }

  /** Cgroup limits of a worker: the interpreter's own baseline plus the shell's memory. */
  private limits(language: WasmLanguage, resources: ResolvedResources): ResolvedResources {
    return {
      ...resources,
      memoryMb: resources.memoryMb + BASELINE_MB[language],
      pids: WORKER_PIDS,
    };
  }

  /** Tops the language's pool up after `REFILL_DELAY_MS`, once however many claims ask. */
  private scheduleRefill(language: WasmLanguage): void {
    if (this.refillTimers[language] || this.closed) return;
    const timer = setTimeout(() => {
      this.refillTimers[language] = null;
      void this.refill(language);
    }, REFILL_DELAY_MS);
    timer.unref();
    this.refillTimers[language] = timer;
  }

  /** Tops the language's pool up to its size; callers share one fill in progress. */
  private refill(language: WasmLanguage): Promise<void> {
    const running = this.fills[language];
    if (running) return running;
    const fill = this.fill(language).finally(() => {
      this.fills[language] = null;
    });
    this.fills[language] = fill;
    return fill;
  }

  /** Starts pooled workers one at a time until the pool is full. */
  private async fill(language: WasmLanguage): Promise<void> {
    while (
      !this.closed &&
      this.pools[language].length + this.filling[language] < this.poolSize[language]
    ) {
      this.filling[language] += 1;
      const workspace = join(this.stateDir, "pool", randomBytes(8).toString("hex"));
      try {
        await mkdir(join(this.stateDir, "pool"), { recursive: true, mode: 0o711 });
        await mkdir(workspace, { mode: 0o700 });
        // Until a shell claims it, the pool directory holds the worker's uid.
        const uid = await claimJailUid(this.uidRegistryDir, JAIL_UID_BANDS.wasm, workspace);
        await chown(workspace, uid, uid);
        const live = await this.startWorker(language, workspace, DEFAULT_POOL_RESOURCES, uid);
        // Execs through the protocol warm the pipe and both ends' code paths, so a claimed
        // worker's first exec costs what its later ones do.
        for (let i = 0; i < POOL_WARM_UP_EXECS && !this.closed; i += 1)
          await live.process.exec(
            {
              mode: "code",
              source: language === "python" ? "pass" : "0",
              argv: [],
              env: {},
              cwd: "/workspace",
              stdin: null,
            },
            () => undefined,
            new AbortController().signal,
          );
        if (this.closed) await this.discard({ ...live, workspace });
        else this.pools[language].push({ ...live, workspace });
      } catch {
        await releaseJailUidsOf(this.uidRegistryDir, workspace);
        await rm(workspace, { recursive: true, force: true });
        return; // the next create starts a worker itself and reports why it fails
      } finally {
        this.filling[language] -= 1;
      }
    }
  }

  private async discard(worker: PooledWorker): Promise<void> {
    await worker.process.kill();
    await worker.cgroup.killAll().catch(() => undefined);
    await worker.cgroup.remove().catch(() => undefined);
    await releaseJailUid(this.uidRegistryDir, worker.uid, worker.workspace);
    await rm(worker.workspace, { recursive: true, force: true });
  }

  private async makeWorkspace(path: string, uid: number): Promise<void> {
    await mkdir(path, { mode: 0o700 });
    await chown(path, uid, uid);
  }

  /** Serialises lifecycle operations per shell (execs, turns and file requests do not take it). */
  private async locked<T>(shellId: string, body: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(shellId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(body);
    this.locks.set(shellId, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(shellId) === next) this.locks.delete(shellId);
    }
  }

  /**
   * Runs `body` with the shell's worker frozen (every thread of it held by the cgroup freezer),
   * so nothing in the guest writes meanwhile; with no worker running nothing can write anyway.
   */
  private async stillWhile<T>(shellId: string, body: () => Promise<T>): Promise<T> {
    const live = this.workers.get(shellId);
    if (!live?.process.running) return body();
    try {
      await live.cgroup.freeze();
    } catch (error) {
      throw new SandboxError(
        "failed",
        `shell ${shellId}'s interpreter could not be held still: ${(error as Error).message}`,
        {},
        { cause: error },
      );
    }
    try {
      return await body();
    } finally {
      await live.cgroup.thaw();
    }
  }

  private state(shellId: string): ShellState {
    return new ShellState(this.shellDir(shellId));
  }

  private shellsRoot(): string {
    return join(this.stateDir, "shells");
  }

  private shellDir(shellId: string): string {
    if (!/^[A-Za-z0-9_.-]+$/.test(shellId) || shellId.startsWith("."))
      throw new SandboxError("not_found", `No wasm sandbox for shell ${shellId}.`);
    return join(this.shellsRoot(), shellId);
  }

  private async record(shellId: string): Promise<ShellRecord> {
    try {
      return JSON.parse(
        await readFile(join(this.shellDir(shellId), "shell.json"), "utf8"),
      ) as ShellRecord;
    } catch {
      throw new SandboxError("not_found", `No wasm sandbox for shell ${shellId}.`);
    }
  }

  private async writeRecord(record: ShellRecord): Promise<void> {
    const file = join(this.shellDir(record.shellId), "shell.json");
    await writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  }

  private info(shellId: string, state: "running" | "stopped"): SandboxInfo {
    return { shellId, state, imageVersion: null };
  }
}

/** Limits a pooled worker holds until a shell claims it and its own limits are written. */
const DEFAULT_POOL_RESOURCES: ResolvedResources = {
  cpu: 1,
  memoryMb: 256,
  pids: WORKER_PIDS,
  diskMb: 0,
};

/**
 * Watches an interrupted request's worker and kills it when the code has not unwound within
 * INTERRUPT_GRACE_CPU_MS of CPU time counted from when the interrupt reached the interpreter (the
 * worker says so), or within INTERRUPT_GRACE_WALL_MS of wall clock in all; a request still queued
 * is left alone. Returns the function that ends the watch.
 */
function killUnlessUnwound(live: LiveWorker, stop: AbortSignal): () => void {
  const started = Date.now();
  let cpuAtStart: number | null | undefined;
  let ended = false;
  let reachedAt: number | null = null;
  const check = async () => {
    // The grace counts from when the interrupt reached the interpreter: until then the worker's
    // CPU goes to the guest's loop while the interrupt waits to be read, which is not unwinding.
    // A request still queued is skipped when its turn comes: nothing of it runs to unwind.
    if (!live.process.runs(stop)) return;
    if (!live.process.interruptReached(stop)) {
      if (!ended && Date.now() - started >= INTERRUPT_GRACE_WALL_MS) {
        ended = true;
        await live.process.kill();
      }
      return;
    }
    reachedAt ??= Date.now();
    const cpu = await cpuMillis(live.cgroup);
    cpuAtStart ??= cpu;
    if (ended) return;
    const wall = Date.now() - started;
    const spent = cpu !== null && cpuAtStart !== null ? cpu - cpuAtStart : Date.now() - reachedAt;
    if (spent >= INTERRUPT_GRACE_CPU_MS || wall >= INTERRUPT_GRACE_WALL_MS) {
      ended = true;
      await live.process.kill();
    }
  };
  void check();
  const timer = setInterval(() => void check(), 100);
  return () => {
    ended = true;
    clearInterval(timer);
  };
}

/** CPU time (user + system) the processes in a cgroup have used, or null when unreadable. */
async function cpuMillis(cgroup: ShellCgroup): Promise<number | null> {
  try {
    let ticks = 0;
    for (const pid of await cgroup.members()) {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
      // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    }
    return ticks * CLOCK_TICK_MS;
  } catch {
    return null;
  }
}

/** Length of the kernel's clock tick, the unit of /proc's CPU times (USER_HZ, 100 on Linux). */
const CLOCK_TICK_MS = 10;

/** OOM kills a cgroup has counted (`oom_kill` in v1 `memory.oom_control` or v2 `memory.events`). */
async function readOomKills(cgroup: ShellCgroup): Promise<number> {
  try {
    const text = await readFile(cgroup.oomEventsFile, "utf8");
    const match = /^oom_kill (\d+)$/m.exec(text);
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}
