import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import type {
  ExecResult,
  KillReason,
  Language,
  RuntimeAvailability,
  Snapshot,
} from "@shells/contract";
import {
  SandboxError,
  type SandboxBackend,
  type SandboxExecOptions,
  type SandboxExecRequest,
  type SandboxFiles,
  type SandboxInfo,
  type SandboxProcess,
  type SandboxSpec,
} from "@shells/sandbox";
import { AgentClient } from "./internal/agent-client.js";
import { kvmUsable, missingHostTools, runChecked, type BuildProgress } from "./internal/host.js";
import { ensureTemplate, type ImageSource, type Template } from "./internal/template.js";
import { isAlive, killAndWait, startVm, type StartedVm, type VmConfig } from "./internal/vm.js";

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
}

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
/** How long a cold boot may take to answer (a loaded, emulated host is slow). */
const BOOT_TIMEOUT_MS = 180_000;

/**
 * The `microvm` runtime class: one QEMU `microvm` guest per shell with its own kernel, restored
 * from a per-language saved VM state, its disk a qcow2 overlay (the shell's state) over a frozen
 * template layer over the read-only base disk made from the container image's rootfs. A static
 * agent inside (native/shells-agent.c) runs execs over a virtio-serial port.
 *
 * This first slice offers create, exec (streamed, wall clock, output limit), stop/start/restart
 * (cold boot on the shell's own disk), wipe_state (a fresh overlay, restored from the template) and
 * destroy. Spawn, files, snapshots and reinstall_os are refused with `unsupported`.
 */
export class MicrovmBackend implements SandboxBackend {
  readonly name = "microvm";
  readonly #options: MicrovmBackendOptions;
  readonly #agents = new Map<string, AgentClient>();
  /** Shells' specs, read once from their records. */
  readonly #specs = new Map<string, SandboxSpec>();

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

  async availability(): Promise<RuntimeAvailability[]> {
    const missing = await missingHostTools();
    if (missing.length)
      return [
        {
          runtime: "microvm",
          available: false,
          backend: this.name,
          reason: `missing on this host: ${missing.join(", ")} (apt-get install qemu-system-x86 qemu-utils cpio gcc)`,
        },
      ];
    const kvm = await kvmUsable();
    return [
      {
        runtime: "microvm",
        available: true,
        backend: this.name,
        reason: kvm ? "microvm (kvm)" : "microvm (emulated)",
      },
    ];
  }

  /** Builds (or finds) the template a create of this language and memory size restores from. */
  prepare(language: Language, memoryMb: number): Promise<Template> {
    return ensureTemplate(
      this.#options.cacheDir ?? `${this.#options.stateDir}/cache`,
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
    const missing = await missingHostTools();
    if (missing.length)
      throw new SandboxError("unavailable", `microvm needs ${missing.join(", ")} on this host`);
    const dir = this.#dir(spec.shellId);
    const template = await this.prepare(spec.language, spec.resources.memoryMb);
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
    const spec = this.#specs.get(shellId) ?? (await this.#record(shellId)).spec;
    this.#specs.set(shellId, spec);
    return agent.exec({ ...request, env: { ...BASE_ENV, ...spec.env, ...request.env } }, options);
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

  spawn(): Promise<SandboxProcess> {
    return Promise.reject(new SandboxError("unsupported", "spawn is not available on microvm yet"));
  }

  readonly files: SandboxFiles = {
    stat: () => unsupported("file operations"),
    list: () => unsupported("file operations"),
    read: () => unsupported("file operations"),
    write: () => unsupported("file operations"),
    remove: () => unsupported("file operations"),
    exportTar: () => unsupported("file operations"),
    importTar: () => unsupported("file operations"),
  };

  snapshot(): Promise<Snapshot> {
    return unsupported("snapshots");
  }
  listSnapshots(): Promise<Snapshot[]> {
    return unsupported("snapshots");
  }
  restore(): Promise<Snapshot> {
    return unsupported("snapshots");
  }
  reinstallOs(): Promise<SandboxInfo> {
    return unsupported("reinstall_os");
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

  async #halt(shellId: string, record: ShellRecord, reason: KillReason): Promise<void> {
    const agent = this.#agents.get(shellId);
    this.#agents.delete(shellId);
    if (reason === "deleted") this.#specs.delete(shellId);
    // Execs cut off when QEMU dies report why the shell was halted.
    if (agent) agent.closeReason = reason;
    // The guest's page cache holds writes its disk has not seen yet: flush them before QEMU is
    // killed, or a stopped shell would lose its last writes.
    if (reason !== "deleted" && agent && !agent.closed)
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
    if (record.pid) await killAndWait(record.pid);
    agent?.close(reason);
    record.pid = null;
    await rm(`${this.#dir(shellId)}/agent.sock`, { force: true });
    await rm(`${this.#dir(shellId)}/qmp.sock`, { force: true });
    await this.#save(shellId, record);
  }

  async #agent(shellId: string): Promise<AgentClient> {
    const existing = this.#agents.get(shellId);
    if (existing && !existing.closed) return existing;
    const record = await this.#record(shellId);
    if (!record.pid || !isAlive(record.pid))
      throw new SandboxError("not_running", `shell ${shellId} is stopped`);
    // A VM left running by an earlier process: connect to its agent again.
    const agent = await AgentClient.connect(`${this.#dir(shellId)}/agent.sock`, 5_000);
    await agent.ready(10_000);
    this.#agents.set(shellId, agent);
    return agent;
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

  #info(record: ShellRecord): SandboxInfo {
    return {
      shellId: record.spec.shellId,
      state: record.pid && isAlive(record.pid) ? "running" : "stopped",
      imageVersion: record.template.imageVersion,
    };
  }
}

function unsupported(what: string): Promise<never> {
  return Promise.reject(
    new SandboxError("unsupported", `${what} are not available on microvm yet`),
  );
}
