import { mkdir, mkdtemp, rm, statfs, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { run, sleep } from "./internal/proc.js";
import { bashSpec, hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

/** A scratch XFS filesystem with reflinks, loop-mounted from a sparse image under a temp dir. */
interface ScratchXfs {
  mountPoint: string;
  /** Unmounts it and removes the image; safe to call more than once. */
  remove: () => Promise<void>;
}

/** Makes and mounts a scratch XFS, or says why this host cannot. */
async function mountScratchXfs(sizeMb: number): Promise<ScratchXfs | string> {
  const dir = await mkdtemp(`${tmpdir()}/shells-xfs-test-`);
  const image = `${dir}/xfs.img`;
  const mountPoint = `${dir}/mnt`;
  let mounted = false;
  const remove = async () => {
    if (mounted) {
      // The shells' loop devices on files in it detach a moment after their last unmount.
      for (let tries = 0; mounted && tries < 50; tries++) {
        mounted = (await run("umount", [mountPoint])).code !== 0;
        if (mounted) await sleep(100);
      }
      if (mounted) await run("umount", ["-l", mountPoint]);
      mounted = false;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await writeFile(image, "", { mode: 0o600 });
    await truncate(image, sizeMb * 1024 * 1024);
    await mkdir(mountPoint);
    const made = await run("mkfs.xfs", ["-q", "-m", "reflink=1", image]).catch((error: Error) => ({
      code: -1,
      stderr: error.message,
    }));
    if (made.code !== 0) {
      await remove();
      return `mkfs.xfs is missing or failed (install xfsprogs): ${made.stderr.trim()}`;
    }
    const mount = await run("mount", ["-o", "loop", image, mountPoint]);
    if (mount.code !== 0) {
      await remove();
      return `loop-mounting an XFS image failed: ${mount.stderr.trim()}`;
    }
    mounted = true;
    return { mountPoint, remove };
  } catch (error) {
    await remove();
    return `making a scratch XFS failed: ${(error as Error).message}`;
  }
}

/** Bytes in use on the filesystem holding `path`. */
async function usedBytes(path: string): Promise<number> {
  const fs = await statfs(path);
  return (fs.blocks - fs.bfree) * fs.bsize;
}

/** Why this file does not run here, or null when it does (probed with a throwaway XFS). */
const skipReason = !hostReport.available
  ? `container backend unavailable: ${hostReport.reason}`
  : await (async () => {
      const probe = await mountScratchXfs(512);
      if (typeof probe === "string") return probe;
      await probe.remove();
      return null;
    })();
if (skipReason) console.warn(`reflink fork tests skipped: ${skipReason}`);

const DATA_MB = 64;

describe.runIf(skipReason === null)("forking a running shell on a state dir with reflinks", () => {
  let xfs: ScratchXfs | null = null;
  let backend: ContainerBackend;
  let cleanup: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    const made = await mountScratchXfs(4096);
    if (typeof made === "string") throw new Error(made);
    xfs = made;
    ({ backend, cleanup } = await makeTestBackend({ stateDir: `${made.mountPoint}/state` }));
  }, 120_000);
  afterAll(async () => {
    try {
      await backend?.close();
      await cleanup?.();
    } finally {
      await xfs?.remove();
    }
  }, 120_000);

  const sh = async (shellId: string, script: string) => {
    const result = await backend.exec(shellId, request(["sh", "-c", script]));
    expect(result.exitCode, result.stderr).toBe(0);
    return result.stdout;
  };
  const LOOK = "cat /workspace/marker; sha256sum < /workspace/big";

  it("reflinks the parent's disk into the layer: three children see the capture's instant, stay independent, and cost no copy of the data", async () => {
    const resources = { ...SMALL, diskMb: 256 };
    await backend.create(bashSpec("rl-p", { resources }));
    await sh(
      "rl-p",
      `head -c ${DATA_MB * 1024 * 1024} /dev/urandom > /workspace/big && echo before > /workspace/marker && sync -f /workspace`,
    );
    const atCapture = await sh("rl-p", LOOK);
    const mountPoint = xfs!.mountPoint;
    await run("sync", ["-f", mountPoint]);
    const usedBefore = await usedBytes(mountPoint);

    const capture = await backend.captureFork("rl-p");
    const children = ["rl-c1", "rl-c2", "rl-c3"];
    try {
      expect(capture.method).toBe("layered_reflink");
      // The layer holds all of the parent's data…
      expect(capture.sizeBytes).toBeGreaterThan(DATA_MB * 1024 * 1024);
      // …and the parent's later in-place writes (no overlay copy-up: the files are in its own
      // upper) do not reach the children made after them.
      await sh(
        "rl-p",
        "echo after > /workspace/marker && printf parent | dd of=/workspace/big conv=notrunc status=none",
      );
      for (const child of children)
        await backend.create(
          bashSpec(child, { resources, from: { captureId: capture.captureId } }),
        );
    } finally {
      await backend.releaseFork(capture.captureId);
    }
    await run("sync", ["-f", mountPoint]);
    // Three children and a layer of 64 MiB each: far less than one copy of the data.
    const grownBytes = (await usedBytes(mountPoint)) - usedBefore;
    expect(grownBytes).toBeLessThan((DATA_MB * 1024 * 1024) / 4);

    for (const child of children) expect(await sh(child, LOOK)).toBe(atCapture);
    const parentNow = await sh("rl-p", LOOK);
    expect(parentNow).not.toBe(atCapture);
    expect(parentNow.startsWith("after\n")).toBe(true);

    // A child's write reaches neither its parent nor its siblings.
    await sh(
      "rl-c1",
      "echo child > /workspace/marker && printf child | dd of=/workspace/big conv=notrunc status=none",
    );
    expect((await sh("rl-c1", LOOK)).startsWith("child\n")).toBe(true);
    expect(await sh("rl-c2", LOOK)).toBe(atCapture);
    expect(await sh("rl-c3", LOOK)).toBe(atCapture);
    expect(await sh("rl-p", LOOK)).toBe(parentNow);
  }, 180_000);
});
