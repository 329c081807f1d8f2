import { randomBytes, randomInt } from "node:crypto";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import type { Language, NetworkMode, ResolvedResources } from "@shells/contract";
import type { LayerRef } from "./layers.js";
import { isAlive } from "./proc.js";

/**
 * What the backend keeps about one shell in `<stateDir>/shells/<id>/shell.json`, enough for a new
 * control plane to re-adopt it. `phase` makes half-made shells recognisable after a crash:
 * `creating` until the first start succeeded, `destroying` once teardown began.
 */
export interface ShellRecord {
  shellId: string;
  phase: "creating" | "ready" | "destroying";
  language: Language;
  network: NetworkMode;
  resources: ResolvedResources;
  env: Record<string, string>;
  /**
   * The unix socket of the shell's egress proxy: an `internet` shell's only way out, and any
   * shell's way to its service bindings.
   */
  egressSocket?: string;
  /** The shell's slot in the host-wide uid registry; null until claimed. */
  uidSlot: number | null;
  /**
   * Host uid of root in the files on the shell's disk, when they are not the shell's own: a fork's
   * disk is a copy of its parent's. The keeper then uses the disk through an id-mapped view.
   */
  diskUidBase?: number;
  /**
   * Shared read-only layers the shell's disk stacks on, top first (a fork's inherited state, see
   * layers.ts); none when the shell's disk holds all its state.
   */
  layers?: LayerRef[];
  /**
   * The shell's disk was made empty over its top layer by a fork of the stopped shell and has not
   * been mounted since: another fork can share that layer as it is instead of stacking again.
   */
  untouchedSinceStack?: boolean;
  imageVersion: string | null;
  /** rootfs directory of the image the shell runs on. */
  imageRootfs: string | null;
  createdAt: string;
  /** Counter for snapshot ordering (two snapshots may share a millisecond). */
  snapshotSeq: number;
  /** A step under way that changes the shell's state in place (see {@link ShellIntent}). */
  intent?: ShellIntent;
  /**
   * The sandbox the shell runs in when it was started ahead for the pool and claimed at create:
   * its dir is `boxes/<boxId>`, its cgroups and uid registry entry are named by the box, and
   * `shells/<shellId>` is a symlink to that dir (see sandbox-pool.ts).
   */
  boxId?: string;
  /**
   * CPU time the cgroup had used when a pooled sandbox was claimed (while pooled it served no
   * one): `usage` subtracts it while the cgroup is that one (`epoch`).
   */
  cpuBaseline?: { epoch: string; cpuUsec: number };
}

/**
 * A step that changes a shell's state in place, recorded before it begins and cleared when it is
 * done, so that the backend's `recover` finishes it after a crash of the control plane: a shell is
 * then in the state after the step, never halfway. `wipe`: a fresh disk replaces the shell's (a
 * fork's disk becomes the shell's own). `reinstall`: everything on the disk outside /workspace
 * goes and the shell runs on the image named. `hold`: the shell's processes were frozen for a
 * capture (snapshot, fork) and are thawed. `stack`: a stopped shell's disk became `layer` and the
 * fresh disk beside it (`disk.stack.img`) becomes the shell's, on top of that layer.
 */
export type ShellIntent =
  | { kind: "wipe" }
  | {
      kind: "reinstall";
      imageVersion: string;
      imageRootfs: string;
      /**
       * A shell on fork layers: the merged /workspace (disk and layers) is on the disk as
       * `workspace.new` and the record no longer names the layers.
       */
      merged?: boolean;
    }
  | { kind: "hold" }
  | { kind: "stack"; layer: LayerRef };

/** Written by the keeper once the shell is up: who holds the shell's namespaces. */
export interface HolderRecord {
  keeperPid: number;
  keeperStart: string;
  initPid: number;
  initStart: string;
  /** Loop device of the shell's disk (`loop7`), so teardown can wait for exactly that one. */
  loopDevice?: string;
}

/** Atomically replaces a JSON file (readers see the old or the new version, never half). */
export async function writeJson(file: string, value: unknown): Promise<void> {
  const temporary = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temporary, JSON.stringify(value, null, 2) + "\n", { mode: 0o600 });
  await rename(temporary, file);
}

/** Reads a JSON file, or null when it does not exist (or is unreadable after a crash). */
export async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch {
    return null;
  }
}

/** The holder of a shell when its init is alive, else null. */
export async function liveHolder(shellDir: string): Promise<HolderRecord | null> {
  const holder = await readJson<HolderRecord>(`${shellDir}/holder.json`);
  if (!holder) return null;
  return (await isAlive(holder.initPid, holder.initStart)) ? holder : null;
}

/** Shell ids present in the state dir (a claimed pooled sandbox's shell is a symlink). */
export async function listShellIds(shellsDir: string): Promise<string[]> {
  try {
    return (await readdir(shellsDir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() || (e.isSymbolicLink() && !e.name.startsWith(".")))
      .map((e) => e.name);
  } catch {
    return [];
  }
}

/**
 * Host uid ranges: root of slot N is host uid UID_BASE + N * 65536. The band 0x70000000 up to
 * 0x7FFE0000 stays clear of login users, /etc/subuid allocations (100000+), systemd's dynamic
 * users and its container ranges (0x80000..0x6FFFFFFF, foreign range 0x7FFE0000+).
 */
export const UID_BASE = 0x7000_0000;
export const UID_RANGE = 65536;
export const UID_SLOTS = (0x7ffe_0000 - UID_BASE) / UID_RANGE;

/** Host uid that is root inside the shell of this slot. */
export function uidBaseOf(slot: number): number {
  return UID_BASE + slot * UID_RANGE;
}

/**
 * Claims a uid slot no other shell on this host holds, across state dirs and processes: a slot is
 * taken by creating `<registry>/<slot>` (atomic), which records the owning shell dir. Slots are
 * drawn at random so a crash that leaks a claim costs one slot of 4094, not a collision.
 */
export function claimUidSlot(registryDir: string, ownerShellDir: string): Promise<number> {
  return claimRegistryEntry(registryDir, { first: 0, count: UID_SLOTS }, ownerShellDir);
}

/**
 * Claims one number of `first` … `first + count - 1` that no other claimant on this host holds,
 * across state dirs and processes: `<registry>/<number>` is created (atomic) and records the owning
 * shell dir. Drawn at random, so a claim leaked by a crash costs one number, never a collision; a
 * claim whose shell dir is gone is stale and freed for a later attempt.
 */
export async function claimRegistryEntry(
  registryDir: string,
  range: { first: number; count: number },
  ownerShellDir: string,
): Promise<number> {
  await mkdir(registryDir, { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const entry = range.first + randomInt(0, range.count);
    try {
      await mkdir(`${registryDir}/${entry}`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      // A claim whose shell dir is gone (deleted by hand, or a crash mid-destroy) is stale: the
      // owner's dir always exists before its claim is made.
      const owner = await readFile(`${registryDir}/${entry}/owner`, "utf8").catch(() => null);
      if (
        owner &&
        !(await stat(owner).then(
          () => true,
          () => false,
        ))
      ) {
        await rm(`${registryDir}/${entry}`, { recursive: true, force: true });
      }
      continue;
    }
    await writeFile(`${registryDir}/${entry}/owner`, ownerShellDir);
    return entry;
  }
  throw new Error(`no free entry in ${registryDir}: all ${range.count} are taken`);
}

/** Releases a slot, only if this shell owns it. */
export async function releaseUidSlot(
  registryDir: string,
  slot: number,
  ownerShellDir: string,
): Promise<void> {
  const owner = await readFile(`${registryDir}/${slot}/owner`, "utf8").catch(() => null);
  if (owner === null || owner === ownerShellDir)
    await rm(`${registryDir}/${slot}`, { recursive: true, force: true });
}

/** Releases every slot owned by a shell dir (a crash may have claimed one before recording it). */
export async function releaseUidSlotsOwnedBy(
  registryDir: string,
  ownerShellDir: string,
): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(registryDir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const owner = await readFile(`${registryDir}/${entry}/owner`, "utf8").catch(() => null);
    if (owner === ownerShellDir)
      await rm(`${registryDir}/${entry}`, { recursive: true, force: true });
  }
}
