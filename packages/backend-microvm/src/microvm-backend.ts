import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import type {
  ExecResult,
  KillReason,
  Language,
  RuntimeAvailability,
  Snapshot,
} from "@shells/contract";
import {
  ExecFiles,
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFiles,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSpawnRequest,
  type SandboxSpec,
} from "@shells/sandbox";
import { AgentClient } from "./internal/agent-client.js";
import type { GuestLimits } from "./internal/protocol.js";
import { checkMicrovmHost, isolationOf } from "./internal/host-check.js";
import { runChecked, type BuildProgress } from "./internal/host.js";
import { ensureTemplate, type ImageSource, type Template } from "./internal/template.js";
import {
  isAlive,
  killAndWait,
  qmp,
  startVm,
  type StartedVm,
  type VmConfig,
} from "./internal/vm.js";

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
}

/** What a shell's directory records, so a restarted control plane finds its VM again. */
interface ShellRecord {
  spec: SandboxSpec;
  template: Template;
  /** QEMU's pid while running, else null. */
  pid: number | null;
  /** Snapshots taken so far (orders them, newest first). */
  snapshotSeq?: number;
}

/** What a snapshot's metadata file holds beside its disk. */
interface SnapshotMeta extends Snapshot {
  seq: number;
}

/** Snapshot names: they become file names in the shell's directory. */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const NETWORK_MODES = ["sealed", "localhost"] as const;

/** Environment every exec starts from; the shell's env and the exec's env override it. */
const BASE_ENV: Record<string, string> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/root",
  LANG: "C.UTF-8",
};
/**
 * How long each try of a restore may take to answer. A restored guest answers in ~0.1–0.5 s under
 * emulation; one that sleeps past 1 s is woken through QMP (see `startVm`). A VM that still does
 * not answer is killed and the restore tried again on a fresh overlay, waiting longer each time.
 */
const RESTORE_TRIES_MS = [4_000, 8_000, 15_000];
/** How long each try of connecting to a running VM's agent waits for its answer. */
const RECONNECT_TRIES_MS = [1_000, 2_000, 4_000, 8_000];
/** How long a cold boot may take to answer (a loaded, emulated host is slow). */
const BOOT_TIMEOUT_MS = 180_000;
/** How long the agent may take to apply the shell's limits. */
const LIMITS_TIMEOUT_MS = 10_000;

/** The shell's pids and memory limits as the guest's cgroup enforces them. */
function guestLimits(spec: SandboxSpec): GuestLimits {
  return { memoryBytes: spec.resources.memoryMb * 1024 * 1024, pids: spec.resources.pids };
}

/**
 * The `microvm` runtime class: one QEMU `microvm` guest per shell with its own kernel, restored
 * from a per-language saved VM state, its disk a qcow2 overlay (the shell's state) over a frozen
 * template layer over the read-only base disk made from the container image's rootfs. A static
 * agent inside (native/shells-agent.c) runs execs over a virtio-serial port.
 *
 * It offers create, exec (streamed, wall clock, output limit), spawn (pipes or a pty, resize,
 * signals), files (run by the guest agent), stop/start/restart (cold boot on the shell's own disk),
 * snapshots (copies of the disk layer), wipe_state (a fresh overlay, restored from the template)
 * and destroy. reinstall_os is refused with `unsupported`.
 */
export class MicrovmBackend implements SandboxBackend {
  readonly name = "microvm";
  readonly #options: MicrovmBackendOptions;
  readonly #agents = new Map<string, AgentClient>();
  /** Shells' specs, read once from their records. */
  readonly #specs = new Map<string, SandboxSpec>();
  /** Connections being made to running VMs' agents, so concurrent calls share one. */
  readonly #connecting = new Map<string, Promise<AgentClient>>();

  constructor(options: MicrovmBackendOptions) {
    this.#options = options;
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
    const host = await checkMicrovmHost(this.#cacheDir);
    if (!host.available) throw new SandboxError("unavailable", `microvm needs ${host.reason}`);
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
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const record: ShellRecord = { spec, template, pid: null };
    try {
      await this.#newOverlay(dir, template);
      await this.#boot(spec.shellId, record, true);
    } catch (error) {
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
    return agent.exec({ ...request, env: { ...BASE_ENV, ...spec.env, ...request.env } }, options);
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
    const env = { ...BASE_ENV, ...(await this.#spec(shellId)).env, ...request.env };
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
      const monitor = await qmp(`${dir}/qmp.sock`, [{ execute: "stop" }]);
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

  reinstallOs(): Promise<SandboxInfo> {
    return Promise.reject(
      new SandboxError("unsupported", "reinstall_os is not available on microvm yet"),
    );
  }

  async wipeState(shellId: string): Promise<SandboxInfo> {
    const record = await this.#record(shellId);
    const wasRunning = Boolean(record.pid && isAlive(record.pid));
    await this.#halt(shellId, record, "stopped");
    await this.#newOverlay(this.#dir(shellId), record.template);
    // An empty overlay matches the template again, so the saved state is valid for it.
    if (wasRunning) await this.#boot(shellId, record, true);
    return this.#info(record);
  }

  async destroy(shellId: string): Promise<void> {
    const dir = this.#dir(shellId);
    if (!existsSync(dir)) return;
    const record = await this.#record(shellId).catch(() => null);
    if (record) await this.#halt(shellId, record, "deleted");
    await rm(dir, { recursive: true, force: true });
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

  async #newOverlay(dir: string, template: Template): Promise<void> {
    await rm(`${dir}/disk.qcow2`, { force: true });
    await runChecked("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-b",
      template.disk,
      "-F",
      "qcow2",
      `${dir}/disk.qcow2`,
    ]);
  }

  /** Starts the shell's VM: restored from the template (fresh overlay) or cold-booted on its disk. */
  async #boot(shellId: string, record: ShellRecord, fromTemplate: boolean): Promise<void> {
    const dir = this.#dir(shellId);
    await rm(`${dir}/agent.sock`, { force: true });
    await rm(`${dir}/qmp.sock`, { force: true });
    const config: VmConfig = {
      accel: record.template.accel,
      vmlinuz: record.template.vmlinuz,
      initrd: record.template.initrd,
      memoryMb: record.template.memoryMb,
      disk: `${dir}/disk.qcow2`,
      agentSocket: `${dir}/agent.sock`,
      qmpSocket: `${dir}/qmp.sock`,
      consoleLog: null,
      ...(fromTemplate ? { incomingState: record.template.state } : {}),
    };
    const vm = fromTemplate
      ? await this.#restore(dir, record.template, config)
      : await startVm(config, BOOT_TIMEOUT_MS);
    try {
      // The template was saved without limits; every restored or booted guest gets the shell's.
      await vm.agent.setLimits(guestLimits(record.spec), LIMITS_TIMEOUT_MS);
    } catch (error) {
      vm.agent.close();
      await killAndWait(vm.pid);
      throw error;
    }
    record.pid = vm.pid;
    this.#agents.set(shellId, vm.agent);
    await this.#save(shellId, record);
  }

  /** Restores the template's state, retrying on a fresh overlay when the guest does not answer. */
  async #restore(dir: string, template: Template, config: VmConfig): Promise<StartedVm> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await startVm(config, RESTORE_TRIES_MS[attempt]!);
      } catch (error) {
        if (attempt + 1 >= RESTORE_TRIES_MS.length) throw error;
        await rm(config.agentSocket, { force: true });
        await rm(`${dir}/qmp.sock`, { force: true });
        await this.#newOverlay(dir, template);
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
    if (record.pid) await killAndWait(record.pid);
    agent?.close(reason);
    record.pid = null;
    await rm(`${this.#dir(shellId)}/agent.sock`, { force: true });
    await rm(`${this.#dir(shellId)}/qmp.sock`, { force: true });
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
    const dir = this.#dir(shellId);
    for (let attempt = 0; ; attempt++) {
      const agent = await AgentClient.connect(`${dir}/agent.sock`, 5_000);
      try {
        await agent.ready(RECONNECT_TRIES_MS[attempt]!);
        // The guest kept its limits; sending them again costs one frame and asserts they hold.
        await agent.setLimits(guestLimits(record.spec), LIMITS_TIMEOUT_MS);
        this.#agents.set(shellId, agent);
        return agent;
      } catch (error) {
        agent.close();
        if (attempt + 1 >= RECONNECT_TRIES_MS.length) throw error;
      }
      await qmp(`${dir}/qmp.sock`, [{ execute: "stop" }, { execute: "cont" }]).then(
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
