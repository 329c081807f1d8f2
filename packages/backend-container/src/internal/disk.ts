import { open, readFile, readdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import { run, runChecked, sleep } from "./proc.js";

/*
 * A shell's writable state lives on its own ext4 filesystem in a sparse image file
 * (`<shellDir>/disk.img`), loop-mounted only inside the shell's private mount namespaces. It holds
 * the overlay's upper dir (the shell's changes to `/`, `/workspace` included) and work dir.
 *
 * Why a loop-mounted image and not a size-limited tmpfs or a quota: the limit is exact (writes
 * past `diskMb` fail with ENOSPC inside the shell and can never fill the host's disk), the state
 * is on disk (it survives stop/start, control-plane restarts and host reboots, and costs no RAM),
 * it works on any host filesystem without quota support, and the image is sparse so an idle shell
 * costs only the blocks it wrote. No journal: the image is scratch state of one shell; after a host
 * crash it is checked (e2fsck) before the next start instead.
 */

/** Creates a fresh, empty disk image of `sizeMb` MiB (replacing any file at `path`). */
export async function createDisk(path: string, sizeMb: number): Promise<void> {
  await rm(path, { force: true });
  await writeFile(path, "", { mode: 0o600 });
  await truncate(path, sizeMb * 1024 * 1024);
  await runChecked("mkfs.ext4", [
    "-q",
    "-F",
    "-b",
    "4096",
    // No blocks reserved for root: the limit the shell sees is the whole diskMb.
    "-m",
    "0",
    "-O",
    "^has_journal",
    "-E",
    "lazy_itable_init=1,nodiscard",
    "-L",
    "shell",
    path,
  ]);
}

/**
 * How a disk image was copied: `reflink` shares the source's blocks until either side writes
 * (btrfs, XFS); `copy` wrote every allocated block again (ext4 and other filesystems without
 * reflinks), keeping holes as holes.
 */
export type DiskCopyMethod = "reflink" | "copy";

/**
 * Copies a disk image (only call while nothing writes it). A reflink is tried first; where the
 * host's filesystem has none, a sparse copy writes only the allocated blocks.
 */
export async function copyDisk(source: string, target: string): Promise<DiskCopyMethod> {
  await rm(target, { force: true });
  const reflink = await run("cp", ["--reflink=always", source, target]);
  if (reflink.code === 0) return "reflink";
  await rm(target, { force: true });
  await runChecked("cp", ["--sparse=always", source, target]);
  return "copy";
}

/** Bytes a file occupies on the host's disk (its allocated blocks; holes cost nothing). */
export async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/**
 * Checks the filesystem when it was not cleanly unmounted (a host crash while the shell ran). Only
 * call with the shell stopped and no loop device on the image.
 */
export async function repairDiskIfNeeded(path: string): Promise<void> {
  const handle = await open(path, "r");
  let state: number;
  let magic: number;
  try {
    const superblock = Buffer.alloc(1024);
    await handle.read(superblock, 0, 1024, 1024);
    magic = superblock.readUInt16LE(56);
    state = superblock.readUInt16LE(58);
  } finally {
    await handle.close();
  }
  if (magic !== 0xef53) throw new Error(`${path} is not an ext4 image`);
  const cleanlyUnmounted = (state & 1) === 1 && (state & 2) === 0;
  if (cleanlyUnmounted) return;
  const result = await run("e2fsck", ["-p", "-f", path]);
  // 0: clean, 1: errors corrected, 2: corrected (reboot advised: irrelevant for an unmounted image)
  if (result.code === null || result.code > 2) {
    const forced = await run("e2fsck", ["-y", "-f", path]);
    if (forced.code === null || forced.code > 2)
      throw new Error(`e2fsck could not repair ${path}: ${forced.stdout.slice(-1000)}`);
  }
}

/** Loop devices currently backed by `path` (a running shell, or one still being torn down). */
export async function loopDevicesFor(path: string): Promise<string[]> {
  return (await loopBackings()).get(path) ?? [];
}

/**
 * Every loop device of the host by the file backing it (a file deleted since keeps its path): one
 * scan of sysfs, for callers that ask about many files at once.
 */
export async function loopBackings(): Promise<Map<string, string[]>> {
  const backings = new Map<string, string[]>();
  let entries: string[];
  try {
    entries = await readdir("/sys/block");
  } catch {
    return backings;
  }
  for (const device of entries) {
    if (!device.startsWith("loop")) continue;
    const file = await backingFile(device);
    if (file !== null) backings.set(file, [...(backings.get(file) ?? []), device]);
  }
  return backings;
}

async function backingFile(device: string): Promise<string | null> {
  const backing = await readFile(`/sys/block/${device}/loop/backing_file`, "utf8").catch(
    () => null,
  );
  return backing === null ? null : backing.trim().replace(/ \(deleted\)$/, "");
}

async function backedBy(device: string, path: string): Promise<string[]> {
  return (await backingFile(device)) === path ? [device] : [];
}

/**
 * Waits until no loop device is backed by the image. After the last process of a shell exits the
 * kernel unmounts and detaches asynchronously; replacing or re-mounting the image before then
 * would mix two generations of the filesystem.
 */
export async function waitForLoopDetached(
  path: string,
  knownDevice?: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    // With the device known, watch only it (a scan reads one sysfs file per loop device on the
    // host: hundreds with hundreds of shells).
    const devices = knownDevice ? await backedBy(knownDevice, path) : await loopDevicesFor(path);
    if (devices.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(`loop device ${devices.join(", ")} still holds ${path}`);
    await sleep(Math.min(2 + round * 3, 50));
  }
}
