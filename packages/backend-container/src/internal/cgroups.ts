import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { access, mkdir, readFile, readdir, rmdir, stat, writeFile } from "node:fs/promises";
import type { ResolvedResources } from "@shells/contract";
import { sleep } from "./proc.js";

/**
 * Where this host's cgroup controllers live. v2: one unified hierarchy (freezing is built in). v1
 * (this build machine): a hierarchy per controller, possibly co-mounted (`cpu,cpuacct`).
 * `cpuacct` (v1) counts CPU time for metering; null where it is not mounted (usage then reports no
 * CPU time). The freezer's, when it is mounted (without it shells cannot be paused).
 */
export type CgroupHost =
  | { version: 2; root: string }
  | {
      version: 1;
      memory: string;
      pids: string;
      cpu: string;
      cpuacct: string | null;
      freezer?: string;
    };

/** The controllers a shell needs; each limit is enforced by one of them. */
const CONTROLLERS = ["memory", "pids", "cpu"] as const;

/**
 * Finds the cgroup hierarchies from /proc/self/mountinfo. A unified (v2) hierarchy is used when it
 * has the memory and pids controllers; hybrid hosts (v2 mounted without controllers next to v1,
 * as here) use v1. Returns the reason when neither works.
 */
export function detectCgroups(
  mountinfo = readFileSync("/proc/self/mountinfo", "utf8"),
  readControllers = (root: string) => readFileSync(`${root}/cgroup.controllers`, "utf8"),
): CgroupHost | string {
  const v1: Partial<Record<(typeof CONTROLLERS)[number] | "cpuacct" | "freezer", string>> = {};
  let unified: string | null = null;
  for (const line of mountinfo.split("\n")) {
    // "36 25 0:31 / /sys/fs/cgroup/memory rw,... shared:15 - cgroup cgroup rw,memory"
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const mountPoint = left.split(" ")[4];
    const [fsType, , superOptions = ""] = right.split(" ");
    if (!mountPoint) continue;
    if (fsType === "cgroup2" && unified === null) unified = mountPoint;
    if (fsType === "cgroup") {
      const options = superOptions.split(",");
      for (const controller of [...CONTROLLERS, "cpuacct", "freezer"] as const)
        if (options.includes(controller)) v1[controller] ??= mountPoint;
    }
  }
  if (unified !== null) {
    try {
      const controllers = readControllers(unified).split(/\s+/);
      if (controllers.includes("memory") && controllers.includes("pids"))
        return { version: 2, root: unified };
    } catch {
      // fall through to v1
    }
  }
  if (v1.memory && v1.pids && v1.cpu)
    return {
      version: 1,
      memory: v1.memory,
      pids: v1.pids,
      cpu: v1.cpu,
      cpuacct: v1.cpuacct ?? null,
      ...(v1.freezer ? { freezer: v1.freezer } : {}),
    };
  const missing = CONTROLLERS.filter((c) => !v1[c]);
  return `cgroup controllers not mounted: ${missing.join(", ")} (need cgroup v2 with memory+pids+cpu, or v1 hierarchies)`;
}

/**
 * Name of a shell's cgroup: the shell id plus a tag of the state dir. Cgroups are host-wide while
 * shell ids are unique only within one state dir; two control planes (or two test runs) on one
 * host must never share, and so kill, each other's cgroups.
 */
export function shellCgroupName(stateDir: string, shellId: string): string {
  return `${shellId}.${createHash("sha256").update(stateDir).digest("hex").slice(0, 8)}`;
}

/** One shell's cgroup(s): limits, event counters, members, removal. */
export class ShellCgroup {
  constructor(
    readonly host: CgroupHost,
    readonly parent: string,
    /** From shellCgroupName. */
    readonly name: string,
  ) {}

  /** Directory of this shell's cgroup in each hierarchy it uses. */
  get dirs(): string[] {
    const leaf = `${this.parent}/${this.name}`;
    if (this.host.version === 2) return [`${this.host.root}/${leaf}`];
    return v1Roots(this.host).map((root) => `${root}/${leaf}`);
  }

  /**
   * What the shell's processes have used: CPU time (cpuacct on v1, `cpu.stat` on v2) since the
   * cgroup was made, memory charged now, and the cgroup directory's inode as the counters' epoch
   * (a cgroup made again is a new directory with a new inode, its counters back at zero). Null when
   * the cgroup does not exist (a stopped shell).
   */
  async usage(): Promise<{ cpuUsec: number; memoryBytes: number; epoch: string } | null> {
    const leaf = `${this.parent}/${this.name}`;
    const host = this.host;
    const cpuDir =
      host.version === 2 ? `${host.root}/${leaf}` : `${host.cpuacct ?? host.cpu}/${leaf}`;
    let epoch: string;
    try {
      epoch = String((await stat(cpuDir)).ino);
    } catch {
      return null;
    }
    if (host.version === 2) {
      const cpuStat = await readFile(`${cpuDir}/cpu.stat`, "utf8").catch(() => "");
      const usec = /^usage_usec (\d+)$/m.exec(cpuStat)?.[1];
      return {
        cpuUsec: Number(usec ?? 0),
        memoryBytes: finiteOrZero(await readNumber(`${cpuDir}/memory.current`)),
        epoch,
      };
    }
    const nanoseconds = host.cpuacct ? await readNumber(`${cpuDir}/cpuacct.usage`) : 0;
    return {
      cpuUsec: Math.floor(finiteOrZero(nanoseconds) / 1000),
      memoryBytes: finiteOrZero(await readNumber(`${host.memory}/${leaf}/memory.usage_in_bytes`)),
      epoch,
    };
  }

  /**
   * The shell's directory in the hierarchy that freezes it (v2: its own; v1: the freezer's), or
   * null on a v1 host without the freezer.
   */
  get freezerDir(): string | null {
    if (this.host.version === 2) return this.dirs[0] as string;
    return this.host.freezer ? `${this.host.freezer}/${this.parent}/${this.name}` : null;
  }

  /**
   * The `cgroup.procs` files the shell's keeper joins. On v2 a cgroup that hands controllers to
   * children holds no processes itself, so the keeper lives in a `holder` leaf beside the execs.
   */
  get procsFiles(): string[] {
    if (this.host.version === 2) return [`${this.dirs[0]}/${HOLDER_GROUP}/cgroup.procs`];
    return this.dirs.map((dir) => `${dir}/cgroup.procs`);
  }

  /** The shell's directory in the pids hierarchy (its limit, and one child per exec). */
  get pidsDir(): string {
    return this.host.version === 2
      ? (this.dirs[0] as string)
      : `${this.host.pids}/${this.parent}/${this.name}`;
  }

  /**
   * A new cgroup for one exec or spawned process, under the shell's in every hierarchy: the shell's
   * limits still bound it (they are hierarchical), and its own counters say what it did — the
   * processes it holds, the forks it was refused, the OOM kills among its processes.
   */
  async createExecGroup(): Promise<ExecCgroup> {
    const group = new ExecCgroup(this, `x-${randomBytes(6).toString("hex")}`);
    const host = this.host;
    // A shell started before CPU accounting was joined has no cpuacct group: its execs start one.
    if (host.version === 1 && host.cpuacct && host.cpuacct !== host.cpu)
      await mkdir(`${host.cpuacct}/${this.parent}/${this.name}`, { recursive: true });
    for (const dir of group.dirs) await mkdir(dir);
    return group;
  }

  /** The exec cgroups that exist in the shell now. */
  async execGroups(): Promise<ExecCgroup[]> {
    try {
      const entries = await readdir(this.pidsDir, { withFileTypes: true });
      return entries
        .filter((entry) => entry.isDirectory() && entry.name.startsWith("x-"))
        .map((entry) => new ExecCgroup(this, entry.name));
    } catch {
      return [];
    }
  }

  /**
   * Finds the exec that filled the shell's process limit: when a fork in the shell was refused since
   * `sinceRefused` and the shell is (still) at its limit, the exec cgroup holding the most processes
   * is the one that filled it — not an exec that merely tried to fork while the shell was full.
   * Returns the culprits (ties are all culprits) and the refusal count to pass next time.
   */
  async pidsCulprits(sinceRefused: number): Promise<{ culprits: ExecCgroup[]; refused: number }> {
    const groups = await this.execGroups();
    const counts = await Promise.all(
      groups.map((group) => readNumber(`${group.pidsDir}/pids.current`)),
    );
    let refused = await readEventsMax(`${this.pidsDir}/pids.events`);
    for (const group of groups) refused += await readEventsMax(`${group.pidsDir}/pids.events`);
    if (refused <= sinceRefused) return { culprits: [], refused };
    const current = await readNumber(`${this.pidsDir}/pids.current`);
    const limit = await readNumber(`${this.pidsDir}/pids.max`);
    // Far from the limit again (the culprit is gone or shrank): nothing to attribute.
    if (!Number.isFinite(limit) || current < limit * 0.9) return { culprits: [], refused };
    const largest = Math.max(0, ...counts);
    const culprits = largest > 0 ? groups.filter((_, i) => counts[i] === largest) : [];
    return { culprits, refused };
  }

  /** File whose `oom_kill N` line counts OOM kills in the shell. */
  get oomEventsFile(): string {
    const dir =
      this.host.version === 2 ? this.dirs[0] : `${this.host.memory}/${this.parent}/${this.name}`;
    return `${dir}/${this.host.version === 2 ? "memory.events" : "memory.oom_control"}`;
  }

  /** Creates the cgroup (idempotent) and writes the shell's limits. */
  async create(resources: ResolvedResources): Promise<void> {
    if (this.host.version === 2) {
      const root = this.host.root;
      await mkdir(`${root}/${this.parent}`, { recursive: true });
      // Controllers must be enabled on every ancestor for the leaf to get its interface files.
      await enableControllers(`${root}/cgroup.subtree_control`);
      await enableControllers(`${root}/${this.parent}/cgroup.subtree_control`);
      const dir = this.dirs[0] as string;
      await mkdir(dir, { recursive: true });
      await this.thaw();
      await this.setLimits(resources);
      // Exec cgroups below get the controllers too; the keeper moves to a leaf of its own.
      await enableControllers(`${dir}/cgroup.subtree_control`);
      await mkdir(`${dir}/${HOLDER_GROUP}`, { recursive: true });
      return;
    }
    for (const dir of this.dirs) await mkdir(dir, { recursive: true });
    // A group left frozen by a crash mid-pause would freeze the new keeper on its first step.
    await this.thaw();
    await this.setLimits(resources);
  }

  /**
   * Writes the shell's limits into its existing cgroup (at create, and when a pooled sandbox
   * started at the smallest limits is claimed: raising a limit always succeeds).
   */
  async setLimits(resources: ResolvedResources): Promise<void> {
    const memoryBytes = String(resources.memoryMb * 1024 * 1024);
    const periodUs = 100_000;
    const quotaUs = String(Math.max(1000, Math.round(resources.cpu * periodUs)));
    if (this.host.version === 2) {
      const dir = this.dirs[0] as string;
      await writeFile(`${dir}/memory.max`, memoryBytes);
      // No swap: past memory.max the shell is OOM-killed instead of thrashing the host's swap.
      await writeOptional(`${dir}/memory.swap.max`, "0");
      await writeFile(`${dir}/pids.max`, String(resources.pids));
      await writeOptional(`${dir}/cpu.max`, `${quotaUs} ${periodUs}`);
      return;
    }
    const [memoryDir, pidsDir, cpuDir] = this.dirs as [string, string, string];
    // memsw = memory + swap; equal to the memory limit means no swap. Absent without swap
    // accounting. It may never be under the memory limit: raised before it, lowered after it.
    const memsw = `${memoryDir}/memory.memsw.limit_in_bytes`;
    await writeOptional(memsw, memoryBytes).catch(() => undefined);
    await writeFile(`${memoryDir}/memory.limit_in_bytes`, memoryBytes);
    await writeOptional(memsw, memoryBytes);
    await writeFile(`${pidsDir}/pids.max`, String(resources.pids));
    await writeFile(`${cpuDir}/cpu.cfs_period_us`, String(periodUs));
    await writeFile(`${cpuDir}/cpu.cfs_quota_us`, quotaUs);
  }

  /** Whether the shell's processes are frozen now (v1: FROZEN; v2: `frozen 1`). */
  async isFrozen(): Promise<boolean> {
    const dir = this.freezerDir;
    if (!dir) return false;
    if (this.host.version === 2)
      return /^frozen 1$/m.test(await readFile(`${dir}/cgroup.events`, "utf8").catch(() => ""));
    return (await readFile(`${dir}/freezer.state`, "utf8").catch(() => "")).trim() === "FROZEN";
  }

  /**
   * Freezes every process of the shell (the keeper, init, execs and their helpers, background
   * processes) and waits until the kernel reports them all frozen. A task that cannot be frozen in
   * time (one stuck in an uninterruptible wait) makes this thaw the shell again and fail: a shell
   * is either wholly paused or not at all.
   */
  async freeze(timeoutMs = 5_000): Promise<void> {
    const dir = this.freezerDir;
    if (!dir) throw new Error("this host has no cgroup freezer (v1 without the freezer hierarchy)");
    if (this.host.version === 1) {
      // A shell started before the freezer hierarchy was in use here has no group in it yet.
      await mkdir(dir, { recursive: true });
      await this.#adoptIntoFreezer(dir);
    }
    await writeFile(
      this.host.version === 2 ? `${dir}/cgroup.freeze` : `${dir}/freezer.state`,
      this.host.version === 2 ? "1" : "FROZEN",
    );
    const deadline = Date.now() + timeoutMs;
    for (let round = 0; !(await this.isFrozen()); round++) {
      if (Date.now() > deadline) {
        await this.thaw();
        throw new Error(`the shell's processes did not freeze within ${timeoutMs} ms`);
      }
      // v1 may stay FREEZING after a task woke; writing FROZEN again retries the stragglers.
      if (this.host.version === 1 && round % 10 === 9)
        await writeFile(`${dir}/freezer.state`, "FROZEN");
      await sleep(Math.min(1 + round, 20));
    }
  }

  /** Lets the shell's processes run again. Idempotent; a no-op where nothing is frozen. */
  async thaw(): Promise<void> {
    const dir = this.freezerDir;
    if (!dir) return;
    const file = this.host.version === 2 ? `${dir}/cgroup.freeze` : `${dir}/freezer.state`;
    await writeOptional(file, this.host.version === 2 ? "0" : "THAWED");
  }

  /**
   * v1: every process of the shell into its freezer group, for shells started before the freezer
   * hierarchy was in use here (their processes joined only memory, pids and cpu).
   */
  async #adoptIntoFreezer(dir: string): Promise<void> {
    const inFreezer = new Set(await subtreeMembers(dir));
    for (const pid of await this.members()) {
      if (inFreezer.has(pid)) continue;
      await writeFile(`${dir}/cgroup.procs`, String(pid)).catch(() => undefined); // gone meanwhile
    }
  }

  /** Host pids of every process in the shell, its exec cgroups included. */
  async members(): Promise<number[]> {
    return subtreeMembers(this.pidsDir);
  }

  /** True when any of the shell's cgroup directories exists. */
  async exists(): Promise<boolean> {
    for (const dir of this.dirs) {
      try {
        await access(dir);
        return true;
      } catch {
        // keep looking
      }
    }
    return false;
  }

  /**
   * Kills every process in the shell and waits until none is left. Membership is the authority:
   * whatever the shell ever started (keeper, init, exec helpers, background processes) is in the
   * cgroup, so this reclaims processes even after the control plane lost track of them.
   */
  async killAll(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (this.host.version === 2) await writeOptional(`${this.dirs[0]}/cgroup.kill`, "1");
    for (let round = 0; ; round++) {
      const pids = await this.members();
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      // A frozen task (a paused shell) acts on its SIGKILL only once thawed.
      if (round === 0) await this.thaw();
      if (Date.now() > deadline)
        throw new Error(`processes of cgroup ${this.name} survive SIGKILL: ${pids.join(" ")}`);
      await sleep(Math.min(2 + round * 2, 50));
    }
  }

  /** Removes the shell's cgroups and every exec cgroup in them (after killAll). Idempotent. */
  async remove(timeoutMs = 10_000): Promise<void> {
    for (const dir of this.dirs) await removeTree(dir, timeoutMs);
  }
}

/** The `holder` leaf of a shell's cgroup on v2 (keeper and init). */
const HOLDER_GROUP = "holder";

/** One exec's (or spawned process's) cgroup, nested in its shell's in every hierarchy. */
export class ExecCgroup {
  constructor(
    readonly shell: ShellCgroup,
    /** `x-<random>`: unique within the shell. */
    readonly name: string,
  ) {}

  /** Directory of this exec's cgroup in each hierarchy. */
  get dirs(): string[] {
    return this.shell.dirs.map((dir) => `${dir}/${this.name}`);
  }

  /** The `cgroup.procs` files the exec helper joins. */
  get procsFiles(): string[] {
    return this.dirs.map((dir) => `${dir}/cgroup.procs`);
  }

  /** This exec's directory in the pids hierarchy. */
  get pidsDir(): string {
    return `${this.shell.pidsDir}/${this.name}`;
  }

  /** File whose `oom_kill N` line counts OOM kills among this exec's processes. */
  get oomEventsFile(): string {
    const host = this.shell.host;
    const dir =
      host.version === 2
        ? this.dirs[0]
        : `${host.memory}/${this.shell.parent}/${this.shell.name}/${this.name}`;
    return `${dir}/${host.version === 2 ? "memory.events" : "memory.oom_control"}`;
  }

  /** Host pids of the exec's processes (the helper, the command, whatever it left running). */
  members(): Promise<number[]> {
    return subtreeMembers(this.pidsDir);
  }

  /**
   * Kills every process in the exec's cgroup except `spare` (the helper still relaying, so it can
   * report), until none is left. Detached descendants (`setsid`, double forks) are members too.
   */
  async kill(spare: number[] = [], timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let round = 0; ; round++) {
      const pids = (await this.members()).filter((pid) => !spare.includes(pid));
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      if (Date.now() > deadline)
        throw new Error(`processes of cgroup ${this.name} survive SIGKILL: ${pids.join(" ")}`);
      await sleep(Math.min(1 + round, 20));
    }
  }

  /**
   * True when this exec by itself filled the shell's process limit: its cgroup's peak reached the
   * shell's limit (within a tenth) and a fork was refused (counted in the forking cgroup on v1; on
   * v2 the refusal is counted at the shell, and the peak alone decides). A fork bomb that burns out
   * between two looks of the pids watch is still the exec that filled the limit.
   */
  async filledShellLimit(): Promise<boolean> {
    const [limit, peak] = await Promise.all([
      readNumber(`${this.shell.pidsDir}/pids.max`),
      readNumber(`${this.pidsDir}/pids.peak`),
    ]);
    if (!Number.isFinite(limit) || peak < limit * 0.9) return false;
    return (
      this.shell.host.version === 2 ||
      (await readEventsMax(`${this.pidsDir}/pids.events`)) > this.#refusedBefore
    );
  }

  /** Forks refused in this cgroup before its current exec (a reused cgroup keeps its counters). */
  #refusedBefore = 0;

  /**
   * Whether the next exec may run in this cgroup instead of a new one: nothing runs in it, and its
   * peak never came near the shell's process limit — counters that only grow (`pids.peak`) must not
   * make the next exec look like the one that filled the limit. Its refused-fork count so far
   * becomes the next exec's zero.
   */
  async reusable(): Promise<boolean> {
    const [members, limit, peak, refused] = await Promise.all([
      readFile(`${this.pidsDir}/cgroup.procs`, "utf8").then((text) =>
        text.split("\n").filter(Boolean),
      ),
      readNumber(`${this.shell.pidsDir}/pids.max`),
      readNumber(`${this.pidsDir}/pids.peak`),
      this.shell.host.version === 1 ? readEventsMax(`${this.pidsDir}/pids.events`) : 0,
    ]);
    if (members.length > 0 || !Number.isFinite(limit) || peak >= limit * 0.9) return false;
    this.#refusedBefore = refused;
    return true;
  }

  /** Removes the cgroup when no process is left in it; false when something still runs there. */
  async removeIfEmpty(): Promise<boolean> {
    if ((await this.members()).length > 0) return false;
    for (const dir of this.dirs) await removeTree(dir, 2_000);
    return true;
  }
}

/** Pids in a cgroup directory and every cgroup below it. */
async function subtreeMembers(dir: string): Promise<number[]> {
  const pids: number[] = [];
  try {
    const text = await readFile(`${dir}/cgroup.procs`, "utf8");
    for (const line of text.split("\n")) if (line) pids.push(Number(line));
    for (const entry of await readdir(dir, { withFileTypes: true }))
      if (entry.isDirectory()) pids.push(...(await subtreeMembers(`${dir}/${entry.name}`)));
  } catch {
    // gone
  }
  return pids;
}

/** Removes a cgroup directory and its children, deepest first. */
async function removeTree(dir: string, timeoutMs: number): Promise<void> {
  try {
    for (const entry of await readdir(dir, { withFileTypes: true }))
      if (entry.isDirectory()) await removeTree(`${dir}/${entry.name}`, timeoutMs);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // EBUSY: exiting tasks are still being released by the kernel.
      if (code !== "EBUSY" || Date.now() > deadline) throw error;
      await sleep(Math.min(2 + round * 2, 50));
    }
  }
}

async function readNumber(file: string): Promise<number> {
  try {
    const text = (await readFile(file, "utf8")).trim();
    return text === "max" ? Infinity : Number(text);
  } catch {
    return 0;
  }
}

/** The `max N` count of a pids.events file (forks refused), 0 when unreadable. */
async function readEventsMax(file: string): Promise<number> {
  try {
    const match = /^max (\d+)/m.exec(await readFile(file, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * The v1 hierarchies a shell's cgroup lives in: memory, pids, cpu, and cpuacct where it is mounted
 * apart from cpu (co-mounted, the cpu directory already counts CPU time).
 */
function v1Roots(host: Extract<CgroupHost, { version: 1 }>): string[] {
  const roots = [host.memory, host.pids, host.cpu];
  if (host.cpuacct && !roots.includes(host.cpuacct)) roots.push(host.cpuacct);
  if (host.freezer && !roots.includes(host.freezer)) roots.push(host.freezer);
  return roots;
}

function finiteOrZero(value: number): number {
  return Number.isFinite(value) ? value : 0;
}

/** Names of the shell cgroups under the parent (for leak checks). */
export async function listShellCgroups(host: CgroupHost, parent: string): Promise<string[]> {
  const roots = host.version === 2 ? [host.root] : v1Roots(host);
  const names = new Set<string>();
  for (const root of roots) {
    try {
      for (const entry of await readdir(`${root}/${parent}`, { withFileTypes: true })) {
        if (entry.isDirectory()) names.add(entry.name);
      }
    } catch {
      // parent not created yet
    }
  }
  return [...names];
}

async function enableControllers(subtreeControl: string): Promise<void> {
  const wanted = ["memory", "pids", "cpu"];
  let current = "";
  try {
    current = await readFile(subtreeControl, "utf8");
  } catch {
    return;
  }
  const missing = wanted.filter((c) => !current.split(/\s+/).includes(c));
  for (const controller of missing) await writeOptional(subtreeControl, `+${controller}`);
}

async function writeOptional(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "EACCES" && code !== "EINVAL" && code !== "ENOTSUP")
      throw error;
  }
}
