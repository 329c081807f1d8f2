import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureImage, type ImageBuildProgress } from "./internal/images.js";
import { processStartTime } from "./internal/proc.js";
import { hostReport } from "./internal/test-support.js";

// Slow: runs mmdebstrap once (10–60 s depending on the mirror).
describe.runIf(hostReport.available)("base image builds", () => {
  let imagesDir: string;
  beforeAll(async () => {
    imagesDir = await mkdtemp(`${tmpdir()}/shells-image-build-`);
  });
  afterAll(() => rm(imagesDir, { recursive: true, force: true }));

  it("build once for concurrent first uses, wait for a live build elsewhere and clear a crashed one", async () => {
    const dir = `${imagesDir}/bash`;
    await mkdir(`${dir}/.build-crashed/rootfs/usr`, { recursive: true });
    // Another process is building right now (its lock names a live process), and will finish.
    const other = spawn("sleep", ["2"]);
    await new Promise((resolve) => other.once("spawn", resolve));
    await mkdir(`${dir}/.build.lock`);
    await writeFile(
      `${dir}/.build.lock/owner`,
      JSON.stringify({ pid: other.pid, start: await processStartTime(other.pid ?? 0) }),
    );
    other.once("exit", () => void rm(`${dir}/.build.lock`, { recursive: true, force: true }));

    const events: ImageBuildProgress[] = [];
    const started = Date.now();
    const [first, second] = await Promise.all([
      ensureImage(imagesDir, "bash", { onProgress: (event) => events.push(event) }),
      ensureImage(imagesDir, "bash", { onProgress: (event) => events.push(event) }),
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    expect(events[0]?.message).toMatch(/waiting for another build/);
    expect(events.at(-1)).toMatchObject({ percent: 100 });
    expect(second.version).toBe(first.version);
    // One finished image, nothing half-built, no lock left.
    expect(await readdir(dir)).toEqual([first.version]);
    expect((await readdir(first.rootfs)).sort()).toEqual(
      expect.arrayContaining(["bin", "etc", "usr", "workspace"]),
    );
    expect(await readdir(`${first.rootfs}/dev`)).toEqual([]);
  }, 300_000);

  it("takes over the lock of a build whose process died", async () => {
    const dir = `${imagesDir}/bash`;
    await mkdir(`${dir}/.build.lock`, { recursive: true });
    await writeFile(`${dir}/.build.lock/owner`, JSON.stringify({ pid: 999_999_999, start: "1" }));
    // The image exists already, so this only has to get past the dead lock and see it.
    const existing = await ensureImage(imagesDir, "bash");
    expect(existing.version).toMatch(/^bash-/);
  });
});
