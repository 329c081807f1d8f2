import type { Duplex } from "node:stream";
import type {
  ExecResult,
  Language,
  KillReason,
  PauseInfo,
  RuntimeAvailability,
  RuntimeClass,
  Snapshot,
} from "@shells/contract";
import {
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxForkCapture,
  type SandboxImage,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxProgress,
  type SandboxSpawnRequest,
  type SandboxSpec,
  type SandboxUsage,
} from "./backend.js";
import { SharedPreparations } from "./shared-preparations.js";
import { spawnSimulated } from "./internal/sim-process.js";
import { SimFiles } from "./internal/sim-files.js";
import {
  fromModel,
  isShellScript,
  runScript,
  textOf,
  toModel,
  type SimFs,
} from "./internal/sim-shell.js";

/** Options of the simulator backend. */
export interface SimulatorBackendOptions {
  /** Runtime classes the simulator pretends to offer (default: all of them). */
  runtimes?: RuntimeClass[];
  /**
   * Models a backend whose languages need a slow first preparation (an image build): each
   * language starts unprepared, and `prepareLanguage` reports five steps spread over this many
   * milliseconds. Left out: every language is ready.
   */
  imageBuildMs?: number;
  /** With `imageBuildMs`: the preparation fails at its end with this reason. */
  imageBuildError?: string;
}

interface SimSnapshot {
  name: string;
  fs: SimFs;
  createdAt: string;
}

interface SimSandbox {
  spec: SandboxSpec;
  state: "running" | "paused" | "stopped";
  fs: SimFs;
  snapshots: SimSnapshot[];
  /** Execs in flight; aborted with their kill reason when the sandbox stops or goes away. */
  inflight: Set<AbortController>;
}

const IMAGE_VERSION = "simulated-1";
const BASE_DIRS = ["/", "/workspace", "/tmp", "/root", "/etc", "/usr", "/bin", "/dev"];

function emptyFs(): SimFs {
  return { files: new Map(), dirs: new Set(BASE_DIRS) };
}

function cloneFs(fs: SimFs): SimFs {
  return { files: new Map([...fs.files].map(([k, v]) => [k, { ...v }])), dirs: new Set(fs.dirs) };
}

function fsSize(fs: SimFs): number {
  let total = 0;
  for (const file of fs.files.values()) total += file.size;
  return total;
}

/**
 * An in-process model of a sandbox backend, for fast tests of everything above the backend.
 *
 * It runs no code. Commands are interpreted by a tiny model of POSIX sh and coreutils (echo, cat,
 * printf, redirects, sleep, dd, …) over an in-memory filesystem, and quota kills are modeled from
 * the shell's limits: a fork bomb ends with `pids`, a memory balloon past `memoryMb` with `oom`,
 * `dd` past `diskMb` with ENOSPC. Anything it does not model answers exit 127 and says so. It walls
 * nothing off: never use it where isolation matters.
 */
export class SimulatorBackend implements SandboxBackend {
  readonly name = "simulator";
  readonly #runtimes: RuntimeClass[];
  readonly #imageBuildMs: number | undefined;
  readonly #imageBuildError: string | undefined;
  /** Languages prepared (models with `imageBuildMs` only), and preparations under way. */
  readonly #prepared = new Set<Language>();
  readonly #preparing = new SharedPreparations<string>();
  /** Custom images built, by id, with when each was last used. */
  readonly #customImages = new Map<string, number>();
  /**
   * How many image builds the model has started (with `imageBuildMs`), per language, and per
   * custom image id.
   */
  readonly imageBuilds = new Map<string, number>();
  readonly #sandboxes = new Map<string, SimSandbox>();
  /** Filesystems captured for forks, by capture id. */
  readonly #captures = new Map<string, { fs: SimFs; language: SandboxSpec["language"] }>();
  /** Files of a running or paused shell (the model's files are not processes: nothing to freeze). */
  readonly files = new SimFiles((shellId) => {
    const sandbox = this.#get(shellId);
    if (sandbox.state === "stopped")
      throw new SandboxError("not_running", `shell ${shellId} is stopped`);
    return sandbox.fs;
  });

  constructor(options: SimulatorBackendOptions = {}) {
    this.#runtimes = options.runtimes ?? ["wasm", "container", "microvm"];
    this.#imageBuildMs = options.imageBuildMs;
    this.#imageBuildError = options.imageBuildError;
  }

  /** Custom images are modelled: built (with `imageBuildMs`'s steps) once, then cached. */
  readonly customImages = true;

  async languageReady(language: Language, image?: SandboxImage): Promise<boolean> {
    if (image) return this.#customImages.has(image.id);
    return this.#imageBuildMs === undefined || this.#prepared.has(language);
  }

  async prepareLanguage(
    language: Language,
    onProgress: (progress: SandboxProgress) => void,
    image?: SandboxImage,
  ): Promise<void> {
    if (await this.languageReady(language, image)) {
      if (image) this.#customImages.set(image.id, Date.now());
      return;
    }
    const steps = 5;
    const stepMs = (this.#imageBuildMs ?? 0) / steps;
    const key = image?.id ?? language;
    await this.#preparing.run(key, onProgress, async (report) => {
      this.imageBuilds.set(key, (this.imageBuilds.get(key) ?? 0) + 1);
      for (let step = 1; step <= steps; step++) {
        report({
          message: `building the ${image ? `custom image ${image.id}` : `${language} image`}: step ${step}/${steps}`,
          percent: Math.round(((step - 1) / steps) * 100),
        });
        await new Promise((resolve) => setTimeout(resolve, stepMs));
      }
      if (this.#imageBuildError)
        throw new SandboxError(
          "unavailable",
          `cannot prepare the ${language} image: ${this.#imageBuildError}`,
        );
      if (image) this.#customImages.set(image.id, Date.now());
      else this.#prepared.add(language);
    });
  }

  async pruneImages(keep: ReadonlySet<string>, unusedForMs: number): Promise<string[]> {
    const inUse = new Set([...this.#sandboxes.values()].map((s) => s.spec.image?.id));
    const removed: string[] = [];
    for (const [id, usedAt] of this.#customImages) {
      if (keep.has(id) || inUse.has(id) || Date.now() - usedAt < unusedForMs) continue;
      this.#customImages.delete(id);
      removed.push(id);
    }
    return removed;
  }

  async availability(): Promise<RuntimeAvailability[]> {
    return this.#runtimes.map((runtime) => ({
      runtime,
      available: true,
      backend: this.name,
      reason: "simulated: a model of the sandbox that runs no code and isolates nothing",
    }));
  }

  async create(spec: SandboxSpec): Promise<SandboxInfo> {
    if (!this.#runtimes.includes(spec.runtime)) {
      throw new SandboxError(
        "unavailable",
        `the simulator is not configured to model ${spec.runtime}`,
      );
    }
    if (spec.network === "internet") {
      throw new SandboxError(
        "unsupported",
        "network mode internet needs the egress proxy, which this server does not offer yet",
      );
    }
    const existing = this.#sandboxes.get(spec.shellId);
    if (existing) return this.#info(existing);
    // Like a backend with images: a create of an unprepared language prepares it first.
    if (!spec.from) await this.prepareLanguage(spec.language, () => undefined, spec.image);
    const capture = spec.from ? this.#captures.get(spec.from.captureId) : undefined;
    if (spec.from && !capture)
      throw new SandboxError("failed", `no fork capture ${spec.from.captureId}`);
    if (capture && capture.language !== spec.language)
      throw new SandboxError("unsupported", "a fork keeps its parent's language");
    const sandbox: SimSandbox = {
      spec,
      state: "running",
      fs: capture ? cloneFs(capture.fs) : emptyFs(),
      snapshots: [],
      inflight: new Set(),
    };
    this.#sandboxes.set(spec.shellId, sandbox);
    return this.#info(sandbox);
  }

  async exec(
    shellId: string,
    request: SandboxExecRequest,
    options: SandboxExecOptions = {},
  ): Promise<ExecResult> {
    const sandbox = this.#running(shellId);
    const started = performance.now();
    const controller = new AbortController();
    const onOuterAbort = () => controller.abort(options.signal?.reason ?? "stopped");
    options.signal?.addEventListener("abort", onOuterAbort, { once: true });
    sandbox.inflight.add(controller);
    try {
      let emitted = 0;
      const streamsItself = isShellScript(request.command);
      const outcome = await runScript({
        argv: request.command.map(toModel),
        env: Object.fromEntries(
          Object.entries({ ...sandbox.spec.env, ...request.env }).map(([k, v]) => [k, toModel(v)]),
        ),
        cwd: toModel(request.cwd),
        stdin: toModel(request.stdin ?? ""),
        fs: sandbox.fs,
        limits: {
          memoryBytes: sandbox.spec.resources.memoryMb * 1024 * 1024,
          pids: sandbox.spec.resources.pids,
          diskBytes: sandbox.spec.resources.diskMb * 1024 * 1024,
          diskUsed: () => fsSize(sandbox.fs),
        },
        deadline: started + request.timeoutMs,
        signal: controller.signal,
        emit: async (stream, text) => {
          if (emitted >= request.maxOutputBytes) return;
          const part = text.slice(0, request.maxOutputBytes - emitted);
          emitted += part.length;
          await options.onOutput?.(stream, fromModel(part));
        },
      });
      let { stdout, stderr } = outcome;
      let killReason: KillReason | undefined = outcome.killReason;
      let exitCode = outcome.exitCode;
      let truncated: boolean | undefined;
      if (stdout.length + stderr.length > request.maxOutputBytes) {
        stdout = stdout.slice(0, request.maxOutputBytes);
        stderr = stderr.slice(0, Math.max(0, request.maxOutputBytes - stdout.length));
        killReason = "output_limit";
        exitCode = 137;
        truncated = true;
      }
      // A plain argv (not `sh -c`) produced its output in one piece: deliver it now.
      if (!streamsItself) {
        if (stdout) await options.onOutput?.("stdout", fromModel(stdout));
        if (stderr) await options.onOutput?.("stderr", fromModel(stderr));
      }
      return {
        exitCode,
        stdout: textOf(stdout),
        stderr: textOf(stderr),
        durationMs: Math.round(performance.now() - started),
        ...(killReason ? { killReason } : {}),
        ...(truncated ? { truncated } : {}),
      };
    } finally {
      sandbox.inflight.delete(controller);
      options.signal?.removeEventListener("abort", onOuterAbort);
    }
  }

  async spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: (stream: "stdout" | "stderr", chunk: Uint8Array) => void | Promise<void> },
  ): Promise<SandboxProcess> {
    const sandbox = this.#running(shellId);
    const controller = new AbortController();
    sandbox.inflight.add(controller);
    const process = spawnSimulated(
      request,
      {
        env: Object.fromEntries(
          Object.entries({ ...sandbox.spec.env, ...request.env }).map(([k, v]) => [k, toModel(v)]),
        ),
        cwd: toModel(request.cwd),
        fs: sandbox.fs,
        limits: {
          memoryBytes: sandbox.spec.resources.memoryMb * 1024 * 1024,
          pids: sandbox.spec.resources.pids,
          diskBytes: sandbox.spec.resources.diskMb * 1024 * 1024,
          diskUsed: () => fsSize(sandbox.fs),
        },
        signal: controller.signal,
      },
      options.onOutput,
    );
    void process.exit.then(() => sandbox.inflight.delete(controller));
    return process;
  }

  async stop(shellId: string, reason: KillReason = "stopped"): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    this.#killAll(sandbox, reason);
    sandbox.state = "stopped";
    return this.#info(sandbox);
  }

  async start(shellId: string): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    sandbox.state = "running";
    return this.#info(sandbox);
  }

  async restart(shellId: string): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    this.#killAll(sandbox, "stopped");
    sandbox.state = "running";
    return this.#info(sandbox);
  }

  /** Models a freeze: execs are refused until `resume`; nothing in the model runs meanwhile. */
  async pause(shellId: string): Promise<{ info: SandboxInfo; pause: PauseInfo }> {
    const sandbox = this.#running(shellId);
    sandbox.state = "paused";
    return {
      info: this.#info(sandbox),
      pause: {
        method: "freeze",
        memoryReleased: false,
        reason: "simulated: the model holds its shells in memory",
      },
    };
  }

  async resume(shellId: string): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    if (sandbox.state === "stopped")
      throw new SandboxError("not_running", `shell ${shellId} is stopped`);
    sandbox.state = "running";
    return this.#info(sandbox);
  }

  async snapshot(shellId: string, name: string): Promise<Snapshot> {
    const sandbox = this.#get(shellId);
    const snap: SimSnapshot = {
      name,
      fs: cloneFs(sandbox.fs),
      createdAt: new Date().toISOString(),
    };
    sandbox.snapshots = [snap, ...sandbox.snapshots.filter((s) => s.name !== name)];
    return this.#describeSnapshot(snap);
  }

  /** The model runs no servers: nothing ever listens on a port. */
  async connectPort(shellId: string, port: number): Promise<Duplex> {
    this.#running(shellId);
    throw new SandboxError(
      "connection_refused",
      `nothing listens on port ${port} in shell ${shellId} (the simulator runs no code)`,
    );
  }

  async captureFork(shellId: string): Promise<SandboxForkCapture> {
    const sandbox = this.#get(shellId);
    const captureId = `capture-${this.#captures.size + 1}-${Date.now().toString(36)}`;
    this.#captures.set(captureId, { fs: cloneFs(sandbox.fs), language: sandbox.spec.language });
    return { captureId, method: "copy", sizeBytes: fsSize(sandbox.fs), frozenMs: 0 };
  }

  async releaseFork(captureId: string): Promise<void> {
    this.#captures.delete(captureId);
  }

  async listSnapshots(shellId: string): Promise<Snapshot[]> {
    return this.#get(shellId).snapshots.map((s) => this.#describeSnapshot(s));
  }

  async restore(shellId: string, name: string): Promise<Snapshot> {
    const sandbox = this.#get(shellId);
    const snap = sandbox.snapshots.find((s) => s.name === name);
    if (!snap)
      throw new SandboxError(
        "snapshot_not_found",
        `shell ${shellId} has no snapshot named ${name}`,
      );
    this.#killAll(sandbox, "stopped");
    sandbox.fs = cloneFs(snap.fs);
    return this.#describeSnapshot(snap);
  }

  async reinstallOs(shellId: string): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    this.#killAll(sandbox, "stopped");
    const fresh = emptyFs();
    for (const [path, file] of sandbox.fs.files)
      if (path.startsWith("/workspace/")) fresh.files.set(path, file);
    for (const dir of sandbox.fs.dirs) if (dir.startsWith("/workspace/")) fresh.dirs.add(dir);
    sandbox.fs = fresh;
    return this.#info(sandbox);
  }

  async wipeState(shellId: string): Promise<SandboxInfo> {
    const sandbox = this.#get(shellId);
    this.#killAll(sandbox, "stopped");
    sandbox.fs = emptyFs();
    return this.#info(sandbox);
  }

  async destroy(shellId: string): Promise<void> {
    const sandbox = this.#sandboxes.get(shellId);
    if (!sandbox) return;
    this.#killAll(sandbox, "deleted");
    this.#sandboxes.delete(shellId);
  }

  async list(): Promise<SandboxInfo[]> {
    return [...this.#sandboxes.values()].map((s) => this.#info(s));
  }

  async close(): Promise<void> {
    // Nothing outlives the process: the model's state is in memory only.
  }

  /**
   * The simulator's model of usage: it runs no code, so no CPU time; its memory is what its
   * in-memory files hold. Null while stopped, as a real backend has no processes then.
   */
  async usage(shellId: string): Promise<SandboxUsage | null> {
    const sandbox = this.#sandboxes.get(shellId);
    if (!sandbox || sandbox.state !== "running") return null;
    return { cpuUsec: 0, memoryBytes: fsSize(sandbox.fs), epoch: "simulated" };
  }

  #get(shellId: string): SimSandbox {
    const sandbox = this.#sandboxes.get(shellId);
    if (!sandbox) throw new SandboxError("not_found", `the simulator holds no shell ${shellId}`);
    return sandbox;
  }

  #running(shellId: string): SimSandbox {
    const sandbox = this.#get(shellId);
    if (sandbox.state === "paused")
      throw new SandboxError("paused", `shell ${shellId} is paused; resume it first`);
    if (sandbox.state !== "running")
      throw new SandboxError("not_running", `shell ${shellId} is stopped`);
    return sandbox;
  }

  #killAll(sandbox: SimSandbox, reason: KillReason): void {
    for (const controller of sandbox.inflight) controller.abort(reason);
  }

  #info(sandbox: SimSandbox): SandboxInfo {
    return {
      shellId: sandbox.spec.shellId,
      state: sandbox.state,
      imageVersion: sandbox.spec.image?.id ?? IMAGE_VERSION,
    };
  }

  #describeSnapshot(snap: SimSnapshot): Snapshot {
    return { name: snap.name, sizeBytes: fsSize(snap.fs), createdAt: snap.createdAt };
  }
}
