import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, watch } from "node:fs";
import { dirname } from "node:path";
import { connect } from "node:net";
import { AgentClient } from "./agent-client.js";
import { jailedQemu, sealSockets, type JailSpec } from "./jail.js";

/**
 * The machine: no ACPI (QEMU names the virtio-mmio devices on the kernel command line instead and
 * shells_mmio registers them), with the legacy PIT, PIC and RTC the kernel's timer setup needs.
 */
const MACHINE = "microvm,pit=on,pic=on,rtc=on,acpi=off";

/** Kernel command line: quiet boot; the agent is init; no TSC calibration hang under emulation. */
const CMDLINE =
  "console=ttyS0 quiet panic=-1 no_timer_check tsc=reliable lpj=4000000 rdinit=/shells-agent";

/**
 * Added under emulation: no address space randomization in the guest. QEMU's TCG (7.2) keys the
 * code it has translated by the guest's virtual address, so a shared library or PIE binary mapped
 * at a fresh random address in every process is translated afresh by every exec: a `true` took
 * 34–59 ms in the guest with randomization and 9–20 ms without (fork + exec from a shell loop, host
 * load average 5). Inside the guest, randomization only hardens the shell's own programs (all the
 * tenant's, run as the guest's root) against exploits of their own bugs; no wall between shells or
 * around the host rests on it (those are the VM and QEMU's jail). Under KVM it costs nothing and
 * stays on. A shell may turn it back on (`/proc/sys/kernel/randomize_va_space`).
 */
const TCG_CMDLINE = "norandmaps";

/** The guest kernel's command line for an accelerator. */
function cmdline(accel: "kvm" | "tcg"): string {
  return accel === "tcg" ? `${CMDLINE} ${TCG_CMDLINE}` : CMDLINE;
}

/**
 * The machine and command lines, as a key: a saved state is only valid for the machine it was
 * saved on, so templates are keyed by it.
 */
export const MACHINE_KEY = createHash("sha256")
  .update(`${MACHINE}\0${CMDLINE}\0${TCG_CMDLINE}`)
  .digest("hex")
  .slice(0, 8);

/** What one VM is made of. The template and every shell restored from it must agree on all but the files. */
export interface VmConfig {
  accel: "kvm" | "tcg";
  vmlinuz: string;
  initrd: string;
  memoryMb: number;
  /** The shell's qcow2 overlay (its backing chain is written in it). */
  disk: string;
  /** Unix socket QEMU serves the agent port on. */
  agentSocket: string;
  /** Where the guest's console goes (templates), or nowhere (shells: a guest must not fill host disk). */
  consoleLog: string | null;
  /** QMP socket, on the host only (template builds save through it; restores are woken through it). */
  qmpSocket?: string;
  /** Saved VM state to start from instead of booting. */
  incomingState?: string;
  /** The seccomp filter's `spawn=deny` (template builds save state through `exec:`). */
  allowSpawn?: boolean;
  /**
   * Runs QEMU in its jail (jail.ts) instead of as this process's user; `killAll` ends every
   * process of the VM (its cgroup), which is how a jailed VM that failed to start is cleaned up.
   */
  jail?: { spec: JailSpec; killAll(): Promise<void> };
  /** Called as each step of the start ends (where a create's time goes). */
  onStep?: (step: string) => void;
}

/**
 * The TCG translation cache, MiB. QEMU's default (1 GiB, touched as the guest runs new code)
 * would let a busy guest grow QEMU far past its guest memory; the host cgroup that bounds a
 * jailed QEMU counts on this bound.
 */
export const TCG_CACHE_MB = 256;

/** QEMU's argv for a microvm: virtio-mmio devices only, no firmware, display, monitor or NIC. */
export function qemuArgs(config: VmConfig, incomingFd?: number): string[] {
  return [
    "-M",
    MACHINE,
    "-accel",
    config.accel === "tcg" ? `tcg,tb-size=${TCG_CACHE_MB}` : config.accel,
    "-cpu",
    config.accel === "kvm" ? "host" : "max",
    "-m",
    String(config.memoryMb),
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-monitor",
    "none",
    "-no-reboot",
    "-nic",
    "none",
    "-sandbox",
    `on,obsolete=deny,elevateprivileges=deny,spawn=${config.allowSpawn ? "allow" : "deny"},resourcecontrol=deny`,
    "-kernel",
    config.vmlinuz,
    "-initrd",
    config.initrd,
    "-append",
    cmdline(config.accel),
    "-chardev",
    config.consoleLog ? `file,id=con,path=${config.consoleLog}` : "null,id=con",
    "-serial",
    "chardev:con",
    "-drive",
    `id=root,file=${config.disk},format=qcow2,if=none,cache=writeback`,
    "-device",
    "virtio-blk-device,drive=root",
    "-device",
    "virtio-serial-device",
    "-chardev",
    `socket,id=agent,path=${config.agentSocket},server=on,wait=off`,
    "-device",
    "virtserialport,chardev=agent,name=shells.agent",
    ...(config.qmpSocket ? ["-qmp", `unix:${config.qmpSocket},server=on,wait=off`] : []),
    ...(incomingFd !== undefined ? ["-incoming", `fd:${incomingFd}`] : []),
  ];
}

/** A started QEMU. */
export interface StartedVm {
  /** QEMU's pid (in the host's pid namespace). */
  pid: number;
  agent: AgentClient;
  /** The guest's kernel release, as its agent reported it. */
  release: string;
}

/**
 * Starts QEMU detached (it outlives this process, so a restarted control plane re-adopts it) and
 * waits for the agent's first answer. With `incomingState` the guest resumes from the saved state
 * (QEMU starts it as soon as the state is loaded); otherwise it boots.
 */
export async function startVm(config: VmConfig, readyTimeoutMs: number): Promise<StartedVm> {
  const step = config.onStep ?? (() => undefined);
  const args = qemuArgs(config, config.incomingState ? 3 : undefined);
  const [file, ...argv] = config.jail
    ? await jailedQemu(config.jail.spec, args)
    : ["qemu-system-x86_64", ...args];
  step("jail argv");
  const stateFd = config.incomingState ? openSync(config.incomingState, "r") : undefined;
  let stderr = "";
  const child = spawn(file!, argv, {
    detached: true,
    stdio: ["ignore", "ignore", "pipe", ...(stateFd === undefined ? [] : [stateFd])],
  });
  if (stateFd !== undefined) closeSync(stateFd);
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<never>((_, reject) => {
    child.once("exit", (code, signal) =>
      reject(
        new Error(`qemu exited (${signal ?? code}) before its agent answered: ${stderr.trim()}`),
      ),
    );
    child.once("error", reject);
  });
  exited.catch(() => undefined);
  step("spawn");
  try {
    if (config.jail) {
      // QEMU binds its sockets while it sets up, before the guest runs: sealed then, they stay its.
      const sockets = [config.agentSocket, ...(config.qmpSocket ? [config.qmpSocket] : [])];
      await Promise.race([waitForPaths(sockets, readyTimeoutMs), exited]);
      step("sockets");
      await sealSockets(config.jail.spec, sockets);
      step("seal");
    }
    const agent = await Promise.race([
      AgentClient.connect(config.agentSocket, readyTimeoutMs),
      exited,
    ]);
    step("connect");
    const release = await Promise.race([awaitReady(agent, config, readyTimeoutMs), exited]);
    step("agent ready");
    child.stderr?.destroy();
    child.unref();
    return { pid: config.jail ? jailedPid(child.pid ?? 0) : (child.pid ?? 0), agent, release };
  } catch (error) {
    child.kill("SIGKILL");
    await config.jail?.killAll();
    throw error;
  }
}

/**
 * Waits until every path (all in one directory) exists: woken by the directory's inotify events
 * as QEMU binds each socket, not by polling.
 */
async function waitForPaths(paths: string[], timeoutMs: number): Promise<void> {
  const made = () => paths.every((path) => existsSync(path));
  const watcher = watch(dirname(paths[0]!));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`qemu made no ${paths.join(" and ")} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      const check = () => {
        if (!made()) return;
        clearTimeout(timer);
        resolve();
      };
      watcher.on("change", check);
      watcher.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      check();
    });
  } finally {
    watcher.close();
  }
}

/** QEMU's pid in a jail: bwrap's only child (QEMU is pid 1 of its own pid namespace). */
function jailedPid(bwrapPid: number): number {
  const children = readFileSync(`/proc/${bwrapPid}/task/${bwrapPid}/children`, "utf8").trim();
  const pid = Number(children.split(/\s+/)[0]);
  if (!pid) throw new Error("the jailed qemu has no process");
  return pid;
}

/**
 * How long a restored guest may stay silent before it gets a QMP `stop` + `cont`: a restore
 * answers in ~70-150 ms here (more under load), and waking one that merely was slow costs a QMP
 * connection, while each sleeping restore waits this long.
 */
const KICK_AFTER_MS = 300;

/**
 * Waits for the agent's first answer. A restored guest sometimes sleeps in HLT with no interrupt
 * ever reaching it (depending on the moment its template was saved; 4 in 40 restores of one
 * template, 0 in 100 of another); pausing and resuming it through QMP wakes it every time seen.
 */
async function awaitReady(agent: AgentClient, config: VmConfig, timeoutMs: number) {
  if (!config.incomingState || !config.qmpSocket) return agent.ready(timeoutMs);
  try {
    return await agent.ready(Math.min(KICK_AFTER_MS, timeoutMs));
  } catch (error) {
    if (agent.closed) throw error;
  }
  const monitor = await qmp(config.qmpSocket, [{ execute: "stop" }, { execute: "cont" }]);
  monitor.close();
  return agent.ready(timeoutMs);
}

/** A minimal QMP client: one command at a time, events skipped. */
export async function qmp(path: string, commands: { execute: string; arguments?: object }[]) {
  const socket = await new Promise<import("node:net").Socket>((resolve, reject) => {
    const s = connect(path);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
  let buffered = "";
  const waiters: ((line: Record<string, unknown>) => void)[] = [];
  socket.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const message = JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>;
      buffered = buffered.slice(newline + 1);
      if ("event" in message || "QMP" in message) continue;
      waiters.shift()?.(message);
    }
  });
  const call = (execute: string, args?: object) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      waiters.push((message) =>
        "error" in message
          ? reject(new Error(`QMP ${execute}: ${JSON.stringify(message.error)}`))
          : resolve(message),
      );
      socket.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }) + "\n");
    });
  try {
    await call("qmp_capabilities");
    const results: Record<string, unknown>[] = [];
    for (const command of commands) results.push(await call(command.execute, command.arguments));
    return { call, results, close: () => socket.destroy() };
  } catch (error) {
    socket.destroy();
    throw error;
  }
}

/** Whether a process is alive. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILLs a process and waits until it is gone (reaped by its parent or init). */
export async function killAndWait(pid: number, timeoutMs = 5000): Promise<void> {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  const until = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < until) {
    // A zombie still answers kill(0): treat a zombie as gone.
    try {
      const stat = await import("node:fs/promises").then((fs) =>
        fs.readFile(`/proc/${pid}/stat`, "utf8"),
      );
      if (/^\d+ \(.*\) Z/.test(stat)) return;
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
