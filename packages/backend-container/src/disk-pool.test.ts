import { readdir, stat } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bashSpec, hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

describe.runIf(hostReport.available)("the warm disk pool", () => {
  let env: Awaited<ReturnType<typeof makeTestBackend>>;
  beforeAll(async () => {
    env = await makeTestBackend({ warmDisks: 2, warmDiskMb: SMALL.diskMb });
  });
  afterAll(() => env?.cleanup());

  it("hands a ready disk to a create of its size, applies the shell's limits, and refills", async () => {
    const { backend, stateDir } = env;
    await backend.warm();
    const [before] = await backend.availability();
    expect(before?.warmPool).toMatchObject({ ready: 2, target: 2, diskMb: SMALL.diskMb });
    const pooled = await Promise.all(
      (await readdir(`${stateDir}/warm-disks`)).map(
        async (name) => (await stat(`${stateDir}/warm-disks/${name}`)).ino,
      ),
    );

    await backend.create(bashSpec("sh-pooled1", { env: { GREETING: "from the pool" } }));
    // The shell's disk is one of the pool's (same inode: moved, not made).
    expect(pooled).toContain((await stat(`${stateDir}/shells/sh-pooled1/disk.img`)).ino);
    const result = await backend.exec(
      "sh-pooled1",
      request(["sh", "-c", 'echo "$GREETING" > /workspace/a && cat /workspace/a']),
    );
    // The shell's own env applies on a pooled disk, which is writable.
    expect(result.stdout).toBe("from the pool\n");
    expect(await diskSizeMb("sh-pooled1")).toBeLessThanOrEqual(SMALL.diskMb);

    await backend.warm();
    const [after] = await backend.availability();
    expect(after?.warmPool?.ready).toBe(2);
    expect(after?.warmPool?.diskBytes).toBeGreaterThan(0);
  });

  it("makes a disk at create for a size the pool does not hold", async () => {
    const { backend } = env;
    await backend.warm();
    await backend.create({
      shellId: "sh-unpooled",
      language: "bash",
      runtime: "container",
      network: "sealed",
      resources: { ...SMALL, diskMb: SMALL.diskMb * 2 },
      env: {},
    });
    const [after] = await backend.availability();
    expect(after?.warmPool?.ready).toBe(2);
    expect(await diskSizeMb("sh-unpooled")).toBeGreaterThan(SMALL.diskMb);
  });

  /** The size of the shell's /workspace filesystem, as `df` inside it reports it. */
  async function diskSizeMb(shellId: string): Promise<number> {
    const df = await env.backend.exec(shellId, request(["sh", "-c", "df -m /workspace | tail -1"]));
    return Number(df.stdout.trim().split(/\s+/)[1]);
  }
});
