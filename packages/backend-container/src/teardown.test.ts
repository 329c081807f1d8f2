import { rm, rmdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, shellCgroupName, type CgroupHost } from "./internal/cgroups.js";
import {
  bashSpec,
  hostObjects,
  hostReport,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

// Slow: 50 full create/exec/destroy cycles (about 5 s).
describe.runIf(hostReport.available)("teardown of container shells", () => {
  const cgroupParent = `shells-leaktest-${process.pid}`;
  const registryDir = `/tmp/shells-leaktest-uid-slots-${process.pid}`;
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  let cgroups: CgroupHost;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend({
      cgroupParent,
      uidRegistryDir: registryDir,
    }));
    const detected = detectCgroups();
    if (typeof detected === "string") throw new Error(detected);
    cgroups = detected;
  });
  afterAll(async () => {
    await cleanup();
    const roots =
      cgroups.version === 2 ? [cgroups.root] : [cgroups.memory, cgroups.pids, cgroups.cpu];
    for (const root of roots) await rmdir(`${root}/${cgroupParent}`).catch(() => undefined);
    await rm(registryDir, { recursive: true, force: true });
  });

  it("leaves no process, cgroup, mount, loop device, uid slot or directory after 50 create/delete cycles", async () => {
    const before = await hostObjects(cgroups, cgroupParent, stateDir, registryDir);
    for (let cycle = 0; cycle < 50; cycle++) {
      const shellId = `cycle-${cycle}`;
      await backend.create(bashSpec(shellId, { network: cycle % 2 ? "localhost" : "sealed" }));
      // Leave something running and something written, as real use does.
      const result = await backend.exec(
        shellId,
        request(["sh", "-c", "echo data > /workspace/f; sleep 300 & echo ok"]),
      );
      expect(result.stdout).toBe("ok\n");
      if (cycle % 10 === 0) await backend.snapshot(shellId, "s");
      if (cycle === 0) {
        // The census sees a live shell's objects, so an empty census after teardown means something.
        const during = await hostObjects(cgroups, cgroupParent, stateDir, registryDir);
        expect(during.processes.join("\n")).toMatch(/shells-keeper[\s\S]*shells-init[\s\S]*sleep/);
        expect(during.cgroups).toEqual([shellCgroupName(stateDir, shellId)]);
        expect(during.loops).toHaveLength(1);
        expect(during.uidSlots).toHaveLength(1);
        expect(during.shellDirs).toEqual([shellId]);
      }
      await backend.destroy(shellId);
    }
    const after = await hostObjects(cgroups, cgroupParent, stateDir, registryDir);
    expect(after).toEqual(before);
    expect(after.processes).toEqual([]);
    expect(after.cgroups).toEqual([]);
  }, 120_000);
});
