import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import {
  chmod,
  chown,
  copyFile,
  mkdir,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import {
  claimJailUid,
  detectCgroups,
  JAIL_UID_BANDS,
  releaseJailUid,
  releaseJailUidsOf,
  shellCgroupName,
  ShellCgroup,
  type CgroupHost,
  type ContainerLogger,
} from "@shells/backend-container";
import type {
  ExecResult,
  KillReason,
  Language,
  RuntimeAvailability,
  Snapshot,
} from "@shells/contract";
import {
  ExecFiles,
  SANDBOX_EGRESS_ENV,
  SANDBOX_EGRESS_PORT,
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFiles,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSpawnRequest,
  type SandboxSpec,
  type SandboxUsage,
} from "@shells/sandbox";
import { AgentClient, type ExecTiming } from "./internal/agent-client.js";
import { agentEgressOf, checkEgressSpec, relayOptionsOf } from "./internal/egress-relay.js";
import type { GuestLimits } from "./internal/protocol.js";
import { checkMicrovmHost, isolationOf } from "./internal/host-check.js";
import { runChecked, type BuildProgress } from "./internal/host.js";
import {
  createLayer,
  ensureTemplate,
  type ImageSource,
  type Template,
} from "./internal/template.js";
import {
  isAlive,
  killAndWait,
  qmp,
  startVm,
  TCG_CACHE_MB,
  type StartedVm,
  type VmConfig,
} from "./internal/vm.js";
import { exportWorkspace, importWorkspace } from "./internal/workspace-transfer.js";

/** Options of a `MicrovmBackend`. */
export interface MicrovmBackendOptions {
  /** Where shells live (one directory each). */
  stateDir: string;
  /** Where kernels, base disks and templates live (default `<stateDir>/cache`); may be shared. */
  cacheDir?: string;
  /** The per-language root filesystems (the container backend's image recipes). */
  images: ImageSource;
  /** Progress of kernel, disk and template builds (the first create of a language takes a while). */
  onProgress?: (event: BuildProgress) => void;
  /**
   * Host-wide registry of the uids jailed QEMUs run as, one per VM (default
   * `/var/lib/shells/microvm-uids`). Shared by every control plane on the host.
   */
  uidRegistryDir?: string;
  /** Parent of each VM's host cgroup (default `shells-microvm`). */
  cgroupParent?: string;
  /** Where the backend reports what it did on its own (recovery after a crash). */
  logger?: ContainerLogger;
  /**
   * The `diskMb` sizes most shells get (the server's default): each template also keeps, per
   * size, a state whose root filesystem already fills such a disk, so those creates grow nothing
   * online. Other sizes (or none given): the restored guest grows its root filesystem itself.
   */
  grownDiskMb?: number[];
  /**
   * Called as each step of a create or start ends, with the milliseconds since the step before
   * (`bench/microvm-bench.mjs` prints them per step): where the time of a create goes.
   */
  onStep?: (shellId: string, step: string, elapsedMs: number) => void;
  /**
   * Called as each exec ends with where its round trip went, in the guest and on the host
   * (`bench/microvm-bench.mjs` prints them).
   */
  onExecTiming?: (shellId: string, timing: ExecTiming) => void;
}

/** What a shell's directory records, so a restarted control plane finds its VM again. */
interface ShellRecord {
  spec: SandboxSpec;
  template: Template;
  /** QEMU's pid while running, else null. */
  pid: number | null;
  /**
   * The unprivileged uid (and gid) the VM's QEMU runs as in its jail; claimed at the first start.
   * A record without one was made before QEMU was jailed: its VM runs unjailed until restarted.
   */
  uid?: number;
  /** Snapshots taken so far (orders them, newest first). */
  snapshotSeq?: number;
  /**
   * Set while `reinstall_os` replaces the layer: the template the old layer (kept as
   * `disk.previous.qcow2` once set aside) belongs to. A crash with it set is rolled back by
   * `recover`: the old layer and template come back.
   */
  reinstallFrom?: Template;
}

/** Files a step writes beside their final name and renames over it; a crash may leave them. */
const TEMPORARY_FILES = /(\.tmp|^disk\.(restore|new)\.qcow2|^workspace\.tar)$/;

/** What a snapshot's metadata file holds beside its disk. */
interface SnapshotMeta extends Snapshot {
  seq: number;
}

/** Snapshot names: they become file names in the shell's directory. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const NETWORK_MODES = ["sealed", "localhost", "internet"] as const;

/** Environment every exec starts from; the shell's env and the exec's env override it. */
const BASE_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LANG: "C.UTF-8",
};
/**
 * How long each try of a restore may take to answer. A restored guest answers in ~0.1–0.5 s under
 * emulation; one silent past 300 ms is woken through QMP (see `startVm`). A VM that still does
 * not answer is killed and the restore tried again on a fresh overlay, waiting longer each time.
 */
const RESTORE_TRIES_MS = [4_000, 8_000, 15_000];
/** How long each try of connecting to a running VM's agent waits for its answer. */
const RECONNECT_TRIES_MS = [1_000, 2_000, 4_000, 8_000];
/** How long a cold boot may take to answer (a loaded, emulated host is slow). */
const BOOT_TIMEOUT_MS = 180_000;
/** How long a passed host check stands for later creates. */
const HOST_CHECK_VALID_MS = 30_000;
/** How long the agent may take to apply the shell's limits. */
const LIMITS_TIMEOUT_MS = 10_000;

/**
 * Memory of QEMU itself beyond the guest's, MiB: its own code and heap, I/O buffers, and the host
 * page cache its disk reads are charged with (reclaimable). The TCG translation cache comes on top
 * under emulation. Measured: a 128 MiB guest's QEMU holds ~160 MiB resident after a restore.
 */
const QEMU_OVERHEAD_MB = 192;
/** Processes and threads of a jailed QEMU (vCPU, I/O worker pool, RCU, bwrap's outer process). */
const QEMU_PIDS = 256;

/**
 * The largest the shell's qcow2 layer can honestly grow for a disk of `diskBytes`: the data, its
 * L2 and refcount tables (well under 1 %) and room to spare. A jailed QEMU may write no larger file.
 */
function layerFileBytes(diskBytes: number): number {
  return diskBytes + Math.ceil(diskBytes / 32) + 64 * 1024 * 1024;
}

/**
 * The saved state a shell's layer is made over and restored from: the template's state whose root
 * filesystem already fills the shell's disk, where the template has one for its `diskMb`.
 */
function restoredFrom(record: ShellRecord): { disk: string; state: string } {
  const { template, spec } = record;
  return template.grown?.find((grown) => grown.diskMb === spec.resources.diskMb) ?? template;
}

/**
 * An empty qcow2 layer over `backing` of `bytes`, made once beside the backing layer and copied
 * for each new shell: a copy of a few hundred KiB instead of a `qemu-img` process per create.
 */
async function emptyLayer(backing: string, bytes: number): Promise<string> {
  const path = `${dirname(backing)}/empty-${bytes}.qcow2`;
  if (existsSync(path)) return path;
  const temporary = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await createLayer(temporary, backing, { bytes });
  await rename(temporary, path);
  return path;
}

/** The shell's limits and network as the guest enforces them, on a disk of `disk.bytes`. */
function guestLimits(spec: SandboxSpec, disk: { bytes: number; grow: boolean }): GuestLimits {
  const budget = spec.resources.diskMb * 1024 * 1024;
  return {
    memoryBytes: spec.resources.memoryMb * 1024 * 1024,
    pids: spec.resources.pids,
    diskBytes: disk.grow ? disk.bytes : 0,
    // The container backend's rule: a failure with at most 1 % of the disk (1 MiB at least) free.
    diskFullBytes: Math.max(1024 * 1024, Math.floor(budget / 100)),
    // A sealed shell granted service bindings reaches its proxy listener over loopback.
    loopback: spec.network !== "sealed" || Boolean(spec.egress),
    egress: agentEgressOf(spec),
  };
}

/** What every exec and spawn of a shell starts from (before its own env). */
function execEnv(spec: SandboxSpec): Record<string, string> {
  return { ...BASE_ENV, ...(spec.network === "internet" ? SANDBOX_EGRESS_ENV : {}), ...spec.env };
}

/**
 * The `microvm` runtime class: one QEMU `microvm` guest per shell with its own kernel, restored
 * from a per-language saved VM state, its disk a qcow2 overlay (the shell's state) over a frozen
 * template layer over the read-only base disk made from the container image's rootfs. A static
 * agent inside (native/shells-agent.c) runs execs over a virtio-serial port.
 *
 * It offers create, exec (streamed, wall clock, output limit), spawn (pipes or a pty, resize,
 * signals), files (run by the guest agent), stop/start/restart (cold boot on the shell's own disk),
 * snapshots (copies of the disk layer), wipe_state (a fresh overlay, restored from the template),
 * reinstall_os (a fresh overlay over the newest template, `/workspace` carried over) and destroy,
 * in `sealed`, `localhost` and `internet`; a shell given an egress proxy reaches it at
 * 127.0.0.1:3128 through the guest agent's relay (internal/egress-relay.ts), with no network device.
 *
 * QEMU runs jailed (internal/jail.ts): its own unprivileged uid, its own namespaces seeing only
 * its own files, its seccomp filter, and a host cgroup bounding its memory, CPU and threads.
 */
export class MicrovmBackend implements SandboxBackend {
  readonly name = "microvm";
  readonly networkModes = NETWORK_MODES;
  /** The guest agent's egress proxy listener on an `internet` shell's loopback. */
  readonly reservedPorts = { internet: [SANDBOX_EGRESS_PORT] } as const;
  readonly #options: MicrovmBackendOptions;
  readonly #agents = new Map<string, AgentClient>();
  /** Shells' specs, read once from their records. */
  readonly #specs = new Map<string, SandboxSpec>();
  /** Connections being made to running VMs' agents, so concurrent calls share one. */
  readonly #connecting = new Map<string, Promise<AgentClient>>();
  #cgroupHost: CgroupHost | null = null;

  constructor(options: MicrovmBackendOptions) {
    this.#options = options;
  }

  /** Reports each step's time since the previous one to `onStep`. */
  #steps(shellId: string): (step: string) => void {
    const onStep = this.#options.onStep;
    if (!onStep) return () => undefined;
    let last = performance.now();
    return (step) => {
      const now = performance.now();
      onStep(shellId, step, now - last);
      last = now;
    };
  }

  /** When the host last passed `checkMicrovmHost` (a dozen lookups): creates then skip it a while. */
  #hostPassedAt = -Infinity;

  async #checkHost(): Promise<void> {
    if (performance.now() - this.#hostPassedAt < HOST_CHECK_VALID_MS) return;
    const host = await checkMicrovmHost(this.#cacheDir);
    if (!host.available) throw new SandboxError("unavailable", `microvm needs ${host.reason}`);
    this.#hostPassedAt = performance.now();
  }

  get #uidRegistryDir(): string {
    return this.#options.uidRegistryDir ?? "/var/lib/shells/microvm-uids";
  }

  /** The VM's host cgroup: QEMU's memory, CPU and threads, and every process of its jail. */
  #cgroup(shellId: string): ShellCgroup {
    if (!this.#cgroupHost) {
      const detected = detectCgroups();
      if (typeof detected === "string") throw new SandboxError("unavailable", detected);
      this.#cgroupHost = detected;
    }
    return new ShellCgroup(
      this.#cgroupHost,
      this.#options.cgroupParent ?? "shells-microvm",
      shellCgroupName(this.#options.stateDir, shellId),
    );
  }

  get #shellsDir(): string {
    return `${this.#options.stateDir}/shells`;
  }

  /** The directory holding a shell's overlay, agent socket and record. */
  shellDirOf(shellId: string): string {
    return this.#dir(shellId);
  }

  #dir(shellId: string): string {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(shellId))
      throw new SandboxError("not_found", `no shell ${shellId}`);
    return `${this.#shellsDir}/${shellId}`;
  }

  get #cacheDir(): string {
    return this.#options.cacheDir ?? `${this.#options.stateDir}/cache`;
  }

  async availability(): Promise<RuntimeAvailability[]> {
    const host = await checkMicrovmHost(this.#cacheDir);
    return [
      { runtime: "microvm", available: host.available, backend: this.name, reason: host.reason },
    ];
  }

  /**
   * Builds (or finds) the template a create of this language and memory size restores from: the
   * language's image, the guest kernel, a base disk, one cold boot and a saved VM state. Minutes the
   * first time (progress goes to `onProgress`); instant once made.
   */
  prepare(language: Language, memoryMb: number): Promise<Template> {
    return ensureTemplate(
      this.#cacheDir,
      language,
      memoryMb,
      this.#options.images,
      this.#options.onProgress,
      this.#options.grownDiskMb,
    );
  }

  async create(spec: SandboxSpec): Promise<SandboxInfo> {
    if (spec.runtime !== "microvm")
      throw new SandboxError("unsupported", `the microvm backend does not run ${spec.runtime}`);
    if (!(NETWORK_MODES as readonly string[]).includes(spec.network))
      throw new SandboxError(
        "unsupported",
        `network mode ${spec.network} is not available for microvm`,
        {
          network: spec.network,
        },
      );
    checkEgressSpec(spec);
    const step = this.#steps(spec.shellId);
    await this.#checkHost();
    step("host check");
    const dir = this.#dir(spec.shellId);
    let template: Template;
    try {
      template = await this.prepare(spec.language, spec.resources.memoryMb);
    } catch (error) {
      throw new SandboxError(
        "unavailable",
        `the ${spec.language} microvm template could not be made: ${(error as Error).message}. Make it with \`shells images build --runtime microvm --memory-mb ${spec.resources.memoryMb} ${spec.language}\` to see each step.`,
        { language: spec.language },
        { cause: error },
      );
    }
    step("template");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const record: ShellRecord = { spec, template, pid: null };
    try {
      await this.#newOverlay(dir, record);
      step("overlay");
      await this.#boot(spec.shellId, record, true, step);
    } catch (error) {
      await this.#halt(spec.shellId, record, "deleted").catch(() => undefined);
      if (record.uid !== undefined) await releaseJailUid(this.#uidRegistryDir, record.uid, dir);
      await rm(dir, { recursive: true, force: true });
      throw new SandboxError(
        "failed",
        `starting the microvm failed: ${(error as Error).message}`,
        {},
        { cause: error },
      );
    }
    return this.#info(record);
  }

  async exec(
    shellId: string,
    request: SandboxExecRequest,
    options?: SandboxExecOptions,
  ): Promise<ExecResult> {
    const agent = await this.#agent(shellId);
    const spec = await this.#spec(shellId);
    const onExecTiming = this.#options.onExecTiming;
    return agent.exec(
      { ...request, env: { ...execEnv(spec), ...request.env } },
      options,
      onExecTiming && ((timing) => onExecTiming(shellId, timing)),
    );
  }

  async #spec(shellId: string): Promise<SandboxSpec> {
    const spec = this.#specs.get(shellId) ?? (await this.#record(shellId)).spec;
    this.#specs.set(shellId, spec);
    return spec;
  }

  async stop(shellId: string, reason: KillReason = "stopped"): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    await this.#halt(shellId, record, reason);
    return this.#info(record);
  }

  /**
   * The VM's host cgroup counters while it runs: the CPU time QEMU spent (the guest's own work and,
   * under emulation, the translation around it: what the host paid), and QEMU's memory now. Null
   * while stopped or for a shell this backend does not have.
   */
  async usage(shellId: string): Promise<SandboxUsage | null> {
    try {
      const record = await this.#record(shellId);
      if (!record.pid || !isAlive(record.pid)) return null;
      return await this.#cgroup(shellId).usage();
    } catch {
      return null;
    }
  }

  async start(shellId: string): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    if (record.pid && isAlive(record.pid)) return this.#info(record);
    await this.#boot(shellId, record, false);
    return this.#info(record);
  }

  async restart(shellId: string): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    await this.#halt(shellId, record, "stopped");
    await this.#boot(shellId, record, false);
    return this.#info(record);
  }

  /**
   * A long-lived process in the guest (a terminal on a pty, an interpreter on pipes), in its own
   * exec cgroup like an exec, multiplexed with every other exec and spawn over the agent's port.
   */
  async spawn(
    shellId: string,
    request: SandboxSpawnRequest,
    options: { onOutput: NonNullable<SandboxExecOptions["onOutput"]> },
  ): Promise<SandboxProcess> {
    const agent = await this.#agent(shellId);
    const env = { ...execEnv(await this.#spec(shellId)), ...request.env };
    // A terminal needs a terminal type; the caller's env (or the shell's) may name another.
    if (request.pty && env.TERM === undefined) env.TERM = "xterm-256color";
    return agent.spawn({ ...request, env }, options.onOutput);
  }

  /** File operations run as small POSIX scripts by the guest agent: paths resolve inside the guest. */
  readonly files: SandboxFiles = new ExecFiles((id, request, options) =>
    this.exec(id, request, options),
  );

  /**
   * A copy of the shell's disk layer. A running guest first flushes its page cache (`sync`), then
   * is paused while the layer is copied: QEMU drains and flushes the disk when it stops, so the copy
   * is what the guest had written, never a half-written qcow2.
   */
  async snapshot(shellId: string, name: string): Promise<Snapshot> {
    if (!SNAPSHOT_NAME.test(name))
      throw new SandboxError("unsupported", `snapshot name ${JSON.stringify(name)} is not allowed`);
    const record = await this.#record(shellId);
    const dir = this.#dir(shellId);
    await mkdir(`${dir}/snapshots`, { recursive: true, mode: 0o700 });
    const disk = `${dir}/snapshots/${name}.qcow2`;
    const temporary = `${disk}.tmp`;
    if (record.pid && isAlive(record.pid)) {
      await this.#sync(shellId);
      const monitor = await qmp(this.#sockets(shellId, record).qmp, [{ execute: "stop" }]);
      try {
        await copyFile(`${dir}/disk.qcow2`, temporary);
      } finally {
        await monitor.call("cont").finally(() => monitor.close());
      }
    } else {
      await copyFile(`${dir}/disk.qcow2`, temporary);
    }
    await rename(temporary, disk);
    record.snapshotSeq = (record.snapshotSeq ?? 0) + 1;
    const meta: SnapshotMeta = {
      name,
      sizeBytes: (await stat(disk)).size,
      createdAt: new Date().toISOString(),
      seq: record.snapshotSeq,
    };
    await writeFile(`${dir}/snapshots/${name}.json`, JSON.stringify(meta, null, 2));
    await this.#save(shellId, record);
    return { name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
  }

  async listSnapshots(shellId: string): Promise<Snapshot[]> {
    await this.#record(shellId);
    return (await this.#snapshots(shellId)).map(({ name, sizeBytes, createdAt }) => ({
      name,
      sizeBytes,
      createdAt,
    }));
  }

  /**
   * Puts a snapshot's disk layer back. The guest's memory belongs to the old disk, so a running
   * shell is cold-booted on the restored layer (seconds under emulation).
   */
  async restore(shellId: string, name: string): Promise<Snapshot> {
    const record = await this.#record(shellId);
    const meta = (await this.#snapshots(shellId)).find((s) => s.name === name);
    if (!meta)
      throw new SandboxError(
        "snapshot_not_found",
        `shell ${shellId} has no snapshot named ${JSON.stringify(name)}`,
      );
    const dir = this.#dir(shellId);
    const wasRunning = Boolean(record.pid && isAlive(record.pid));
    await this.#halt(shellId, record, "stopped", { flush: false });
    await copyFile(`${dir}/snapshots/${name}.qcow2`, `${dir}/disk.restore.qcow2`);
    await rename(`${dir}/disk.restore.qcow2`, `${dir}/disk.qcow2`);
    if (wasRunning) await this.#boot(shellId, record, false);
    return { name: meta.name, sizeBytes: meta.sizeBytes, createdAt: meta.createdAt };
  }

  /**
   * A fresh OS layer from the language's newest template, `/workspace` kept: the guest packs
   * `/workspace` into a tar archive spooled to the shell's directory, the shell's layer is put
   * aside, a new one over the template is restored, and the archive unpacked into it. A stopped
   * shell is cold-booted to read its `/workspace` and stopped again. When anything fails the old
   * layer is put back, so the shell keeps what it had.
   */
  async reinstallOs(shellId: string): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    const dir = this.#dir(shellId);
    const wasRunning = Boolean(record.pid && isAlive(record.pid));
    let template: Template;
    try {
      template = await this.prepare(record.spec.language, record.spec.resources.memoryMb);
    } catch (error) {
      throw new SandboxError(
        "unavailable",
        `the ${record.spec.language} microvm template could not be made: ${(error as Error).message}`,
        { language: record.spec.language },
        { cause: error },
      );
    }
    if (!wasRunning) await this.#boot(shellId, record, false);
    const archive = `${dir}/workspace.tar`;
    const previous = record.template;
    try {
      await exportWorkspace(await this.#agent(shellId), archive);
      await this.#halt(shellId, record, "stopped");
      record.reinstallFrom = previous;
      await this.#save(shellId, record);
      await rename(`${dir}/disk.qcow2`, `${dir}/disk.previous.qcow2`);
      record.template = template;
      await this.#newOverlay(dir, record);
      await this.#boot(shellId, record, true);
      await importWorkspace(await this.#agent(shellId), archive);
    } catch (error) {
      await this.#halt(shellId, record, "stopped", { flush: false });
      if (existsSync(`${dir}/disk.previous.qcow2`))
        await rename(`${dir}/disk.previous.qcow2`, `${dir}/disk.qcow2`);
      record.template = previous;
      delete record.reinstallFrom;
      await this.#save(shellId, record);
      if (wasRunning) await this.#boot(shellId, record, false);
      throw new SandboxError(
        "failed",
        `reinstall_os failed, the shell keeps its disk: ${(error as Error).message}`,
        {},
        { cause: error },
      );
    } finally {
      await rm(archive, { force: true });
    }
    delete record.reinstallFrom;
    await this.#save(shellId, record);
    await rm(`${dir}/disk.previous.qcow2`, { force: true });
    if (!wasRunning) await this.#halt(shellId, record, "stopped");
    return this.#info(record);
  }

  async wipeState(shellId: string): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    const wasRunning = Boolean(record.pid && isAlive(record.pid));
    await this.#halt(shellId, record, "stopped");
    await this.#newOverlay(this.#dir(shellId), record);
    // An empty overlay matches the template again, so the saved state is valid for it.
    if (wasRunning) await this.#boot(shellId, record, true);
    return this.#info(record);
  }

  async destroy(shellId: string): Promise<void> {
    const dir = this.#dir(shellId);
    if (!existsSync(dir)) return;
    const record = await this.#record(shellId).catch(() => null);
    if (record) await this.#halt(shellId, record, "deleted");
    // Whatever a crash left in the VM's cgroup goes too, record or not.
    const cgroup = this.#cgroup(shellId);
    await cgroup.killAll();
    await cgroup.remove();
    await rm(dir, { recursive: true, force: true });
    if (record?.uid !== undefined) await releaseJailUid(this.#uidRegistryDir, record.uid, dir);
  }

  /**
   * Settles what a crash of the control plane cut in the middle of a step (see
   * `SandboxBackend.recover`):
   * - a shell directory without a record (a create cut before its first save, or a destroy cut
   *   after removing it) is reclaimed: its cgroup, its uid claim and the directory;
   * - a cut `reinstall_os` is rolled back: the VM is stopped and the old layer and template put
   *   back (the reconciler then starts it again when the store says it runs);
   * - a VM a cut snapshot left paused is resumed;
   * - snapshot files no metadata names, and temporary files, are removed;
   * - what a VM that is gone still holds (its cgroup, sockets) is released.
   * Running VMs are otherwise left as they are.
   */
  async recover(): Promise<void> {
    const entries = await readdir(this.#shellsDir).catch(() => [] as string[]);
    for (const shellId of entries)
      await this.#recoverShell(shellId).catch((error: unknown) =>
        this.#options.logger?.error(
          { shellId, err: error },
          "recovering the microvm after a crash failed",
        ),
      );
  }

  async #recoverShell(shellId: string): Promise<void> {
    const dir = this.#dir(shellId);
    const record = await this.#record(shellId).catch(() => null);
    if (!record) {
      const cgroup = this.#cgroup(shellId);
      await cgroup.killAll();
      await cgroup.remove();
      await releaseJailUidsOf(this.#uidRegistryDir, dir);
      await rm(dir, { recursive: true, force: true });
      return;
    }
    const alive = Boolean(record.pid && isAlive(record.pid));
    if (record.reinstallFrom) {
      await this.#halt(shellId, record, "stopped", { flush: false });
      if (existsSync(`${dir}/disk.previous.qcow2`))
        await rename(`${dir}/disk.previous.qcow2`, `${dir}/disk.qcow2`);
      record.template = record.reinstallFrom;
      delete record.reinstallFrom;
      await this.#save(shellId, record);
    } else if (alive) {
      // Nothing but a snapshot stops a VM and lets it go on: one still paused was cut there.
      await qmp(this.#sockets(shellId, record).qmp, [{ execute: "query-status" }]).then(
        async (monitor) => {
          try {
            const [status] = monitor.results as { return?: { status?: string } }[];
            if (status?.return?.status === "paused") await monitor.call("cont");
          } finally {
            monitor.close();
          }
        },
      );
    } else if (record.pid || (await this.#cgroup(shellId).exists())) {
      await this.#halt(shellId, record, "stopped", { flush: false });
    }
    await rm(`${dir}/disk.previous.qcow2`, { force: true });
    for (const entry of await readdir(dir))
      if (TEMPORARY_FILES.test(entry)) await rm(`${dir}/${entry}`, { force: true });
    const named = new Set((await this.#snapshots(shellId)).map((meta) => `${meta.name}.qcow2`));
    for (const entry of await readdir(`${dir}/snapshots`).catch(() => [] as string[]))
      if (!entry.endsWith(".json") && !named.has(entry))
        await rm(`${dir}/snapshots/${entry}`, { force: true });
  }

  async list(): Promise<SandboxInfo[]> {
    let entries: string[];
    try {
      entries = await readdir(this.#shellsDir);
    } catch {
      return [];
    }
    const infos: SandboxInfo[] = [];
    for (const entry of entries) {
      const record = await this.#record(entry).catch(() => null);
      if (record) infos.push(this.#info(record));
    }
    return infos;
  }

  async close(): Promise<void> {
    for (const agent of this.#agents.values()) agent.close("host_restart");
    this.#agents.clear();
  }

  /**
   * The size of the shell's disk: the template's disk plus the shell's `diskMb`. The guest grows
   * its root filesystem to fill it (`grow`), and the layer can never outgrow it, whatever the guest
   * does. Templates made before base disks were shrunk recorded no size: their shells keep the
   * base disk's size (and its room), ungrown.
   */
  async #disk(record: ShellRecord): Promise<{ bytes: number; grow: boolean }> {
    const { diskBytes } = record.template;
    if (diskBytes === undefined)
      return { bytes: (await stat(await this.#baseDisk(record.template))).size, grow: false };
    return { bytes: diskBytes + record.spec.resources.diskMb * 1024 * 1024, grow: true };
  }

  /**
   * The read-only disk under a template's layer. Read from the template's own layer (made by this
   * host, never written by a guest) when older templates did not record it, and never from a
   * shell's layer, whose header a guest-driven QEMU could have rewritten.
   */
  async #baseDisk(template: Template): Promise<string> {
    if (template.baseDisk) return template.baseDisk;
    const info = JSON.parse(
      await runChecked("qemu-img", ["info", "-U", "--output=json", template.disk]),
    ) as { "full-backing-filename"?: string; "backing-filename"?: string };
    const base = info["full-backing-filename"] ?? info["backing-filename"];
    if (!base) throw new Error(`the template layer ${template.disk} has no backing disk`);
    return base;
  }

  /**
   * A fresh, empty layer over the shell's template, of the shell's disk size. Made beside the old
   * one and renamed over it, so a crash leaves the old layer or the new one, never none.
   */
  async #newOverlay(dir: string, record: ShellRecord): Promise<void> {
    const fresh = `${dir}/disk.new.qcow2`;
    await rm(fresh, { force: true });
    await copyFile(
      await emptyLayer(restoredFrom(record).disk, (await this.#disk(record)).bytes),
      fresh,
    );
    await rename(fresh, `${dir}/disk.qcow2`);
  }

  /** The VM's agent and QMP sockets (beside the layer for VMs started before the jail). */
  #sockets(shellId: string, record: ShellRecord): { agent: string; qmp: string } {
    const dir = this.#dir(shellId);
    const runDir = record.uid === undefined ? dir : `${dir}/run`;
    return { agent: `${runDir}/agent.sock`, qmp: `${runDir}/qmp.sock` };
  }

  /**
   * Starts the shell's VM in its jail: restored from the template (fresh overlay) or cold-booted
   * on its disk. The jail's uid owns the layer and the socket directory and nothing else; the
   * cgroup is made with QEMU's limits before QEMU starts.
   */
  async #boot(
    shellId: string,
    record: ShellRecord,
    fromTemplate: boolean,
    step = this.#steps(shellId),
  ): Promise<void> {
    const dir = this.#dir(shellId);
    record.uid ??= await claimJailUid(this.#uidRegistryDir, JAIL_UID_BANDS.microvm, dir);
    await this.#save(shellId, record);
    step("uid");
    const uid = record.uid;
    const runDir = `${dir}/run`;
    await rm(runDir, { recursive: true, force: true });
    await mkdir(runDir, { mode: 0o700 });
    await chown(runDir, uid, uid);
    const layer = `${dir}/disk.qcow2`;
    await chown(layer, uid, uid);
    await chmod(layer, 0o600);
    const template = record.template;
    const cgroup = this.#cgroup(shellId);
    await cgroup.create({
      cpu: record.spec.resources.cpu,
      memoryMb:
        template.memoryMb + QEMU_OVERHEAD_MB + (template.accel === "tcg" ? TCG_CACHE_MB : 0),
      pids: QEMU_PIDS,
      diskMb: record.spec.resources.diskMb,
    });
    step("cgroup");
    const sockets = this.#sockets(shellId, record);
    const disk = await this.#disk(record);
    const config: VmConfig = {
      accel: template.accel,
      vmlinuz: template.vmlinuz,
      initrd: template.initrd,
      memoryMb: template.memoryMb,
      disk: layer,
      agentSocket: sockets.agent,
      qmpSocket: sockets.qmp,
      consoleLog: null,
      ...(fromTemplate ? { incomingState: restoredFrom(record).state } : {}),
      jail: {
        spec: {
          uid,
          cgroupProcs: cgroup.procsFiles,
          readOnly: [
            template.vmlinuz,
            template.initrd,
            ...(restoredFrom(record) === template ? [] : [restoredFrom(record).disk]),
            template.disk,
            await this.#baseDisk(template),
          ],
          layer,
          socketDir: runDir,
          maxFileBytes: layerFileBytes(disk.bytes),
          kvm: template.accel === "kvm",
        },
        killAll: () => cgroup.killAll(),
      },
      onStep: step,
    };
    const vm = fromTemplate
      ? await this.#restore(dir, record, config)
      : await startVm(config, BOOT_TIMEOUT_MS);
    try {
      // The restored guest still knows the template's disk size: a resize to the size the layer
      // already has tells it the real one (a virtio config change), and the agent grows into it.
      const grown = fromTemplate && restoredFrom(record) !== template;
      if (fromTemplate && disk.grow && !grown)
        await qmp(sockets.qmp, [
          { execute: "block_resize", arguments: { device: "root", size: disk.bytes } },
        ]).then((monitor) => monitor.close());
      step("block_resize");
      // The guest's egress listeners open with the limits: streams find the relay in place.
      vm.agent.serveEgress(relayOptionsOf(record.spec));
      // The template was saved without limits; every restored or booted guest gets the shell's.
      // A guest restored from the grown state already fills its disk.
      await vm.agent.setLimits(
        guestLimits(record.spec, grown ? { ...disk, grow: false } : disk),
        LIMITS_TIMEOUT_MS,
      );
      step("limits");
    } catch (error) {
      vm.agent.close();
      await cgroup.killAll();
      throw error;
    }
    record.pid = vm.pid;
    this.#agents.set(shellId, vm.agent);
    await this.#save(shellId, record);
    step("saved");
  }

  /** Restores the template's state, retrying on a fresh overlay when the guest does not answer. */
  async #restore(dir: string, record: ShellRecord, config: VmConfig): Promise<StartedVm> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await startVm(config, RESTORE_TRIES_MS[attempt]!);
      } catch (error) {
        if (attempt + 1 >= RESTORE_TRIES_MS.length) throw error;
        await rm(config.agentSocket, { force: true });
        await rm(config.qmpSocket!, { force: true });
        // The failed try's sockets were sealed (their directory handed to root): the next QEMU
        // makes its own there again, as the VM's uid.
        if (config.jail) await chown(config.jail.spec.socketDir, record.uid!, record.uid!);
        await this.#newOverlay(dir, record);
        await chown(config.disk, record.uid!, record.uid!);
        await chmod(config.disk, 0o600);
      }
    }
  }

  /** Flushes the guest's page cache to its disk (the layer QEMU writes). */
  async #sync(shellId: string): Promise<void> {
    const agent = await this.#agent(shellId);
    await agent
      .exec({
        command: ["sync"],
        env: BASE_ENV,
        cwd: "/",
        stdin: undefined,
        timeoutMs: 10_000,
        maxOutputBytes: 1024,
      })
      .catch(() => undefined);
  }

  /**
   * Ends the VM: its agent connection, QEMU, and every other process of its jail (the cgroup is
   * the authority, so a QEMU this process never started is reclaimed too), then the cgroup itself
   * and the sockets.
   */
  async #halt(
    shellId: string,
    record: ShellRecord,
    reason: KillReason,
    { flush = reason !== "deleted" } = {},
  ): Promise<void> {
    // The guest's page cache holds writes its disk has not seen yet: flush them before QEMU is
    // killed, or a stopped shell would lose its last writes.
    if (flush && record.pid && isAlive(record.pid))
      await this.#sync(shellId).catch(() => undefined);
    const agent = this.#agents.get(shellId);
    this.#agents.delete(shellId);
    if (reason === "deleted") this.#specs.delete(shellId);
    // Execs cut off when QEMU dies end with the reason of the stop, not a generic one.
    if (agent) agent.closeReason = reason;
    // A jailed VM is ended through its cgroup alone: a recorded pid may by now be another
    // process's, the cgroup's members never are. A VM started before the jail has only its pid.
    if (record.pid && record.uid === undefined) await killAndWait(record.pid);
    const cgroup = this.#cgroup(shellId);
    await cgroup.killAll();
    await cgroup.remove();
    agent?.close(reason);
    record.pid = null;
    const sockets = this.#sockets(shellId, record);
    await rm(sockets.agent, { force: true });
    await rm(sockets.qmp, { force: true });
    await rm(`${this.#dir(shellId)}/run`, { recursive: true, force: true });
    await this.#save(shellId, record);
  }

  /** The shell's agent connection, connecting again when there is none (one attempt at a time). */
  #agent(shellId: string): Promise<AgentClient> {
    const existing = this.#agents.get(shellId);
    if (existing && !existing.closed) return Promise.resolve(existing);
    let pending = this.#connecting.get(shellId);
    if (!pending) {
      pending = this.#reconnect(shellId).finally(() => this.#connecting.delete(shellId));
      this.#connecting.set(shellId, pending);
    }
    return pending;
  }

  /**
   * Connects to the agent of a VM that runs without a connection (one left by an earlier process of
   * the control plane). QEMU serves one connection at a time, so a connection that gets no answer is
   * closed before the next try. Seen here: the first connection after a control-plane restart now
   * and then gets no answer while a fresh one at once does; between tries the guest is also paused
   * and resumed through QMP, which wakes a guest asleep in HLT (see `startVm`).
   */
  async #reconnect(shellId: string): Promise<AgentClient> {
    const record = await this.#record(shellId);
    if (!record.pid || !isAlive(record.pid))
      throw new SandboxError("not_running", `shell ${shellId} is stopped`);
    const sockets = this.#sockets(shellId, record);
    const disk = await this.#disk(record);
    for (let attempt = 0; ; attempt++) {
      const agent = await AgentClient.connect(sockets.agent, 5_000);
      agent.serveEgress(relayOptionsOf(record.spec));
      try {
        await agent.ready(RECONNECT_TRIES_MS[attempt]!);
        // The guest kept its limits; sending them again costs one frame and asserts they hold.
        await agent.setLimits(guestLimits(record.spec, disk), LIMITS_TIMEOUT_MS);
        this.#agents.set(shellId, agent);
        return agent;
      } catch (error) {
        agent.close();
        if (attempt + 1 >= RECONNECT_TRIES_MS.length) throw error;
      }
      await qmp(sockets.qmp, [{ execute: "stop" }, { execute: "cont" }]).then(
        (monitor) => monitor.close(),
        () => undefined,
      );
    }
  }

  async #record(shellId: string): Promise<ShellRecord> {
    try {
      return JSON.parse(await readFile(`${this.#dir(shellId)}/shell.json`, "utf8")) as ShellRecord;
    } catch {
      throw new SandboxError("not_found", `no microvm for shell ${shellId}`);
    }
  }

  async #save(shellId: string, record: ShellRecord): Promise<void> {
    await writeFile(`${this.#dir(shellId)}/shell.json`, JSON.stringify(record, null, 2));
  }

  async #snapshots(shellId: string): Promise<SnapshotMeta[]> {
    const dir = `${this.#dir(shellId)}/snapshots`;
    const entries = await readdir(dir).catch(() => [] as string[]);
    const metas: SnapshotMeta[] = [];
    for (const entry of entries.filter((e) => e.endsWith(".json")))
      metas.push(JSON.parse(await readFile(`${dir}/${entry}`, "utf8")) as SnapshotMeta);
    return metas.sort((a, b) => b.seq - a.seq);
  }

  #info(record: ShellRecord): SandboxInfo {
    return {
      shellId: record.spec.shellId,
      state: record.pid && isAlive(record.pid) ? "running" : "stopped",
      imageVersion: record.template.imageVersion,
      isolation: isolationOf(record.template.accel),
    };
  }
}
