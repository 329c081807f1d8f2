import { readFile, readdir, rm, rmdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import {
  detectCgroups,
  listShellCgroups,
  shellCgroupName,
  type CgroupHost,
} from "./internal/cgroups.js";
import { hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

/** Everything on the host a shell could leave behind, as comparable text. */
async function hostObjects(
  cgroups: CgroupHost,
  cgroupParent: string,
  stateDir: string,
  registryDir: string,
) {
  const processes: string[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const [cmdline, cgroup, status] = await Promise.all([
      readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => ""),
      readFile(`/proc/${entry}/cgroup`, "utf8").catch(() => ""),
      readFile(`/proc/${entry}/status`, "utf8").catch(() => ""),
    ]);
    // Ours: anything in our cgroups, anything naming our state dir, any shell keeper/init/drainer
    // whose cgroup is ours, and zombies count (an unreaped process is a leftover too).
    if (cgroup.includes(`/${cgroupParent}/`) || cmdline.includes(stateDir)) {
      processes.push(
        `${entry} ${/Name:\t(.*)/.exec(status)?.[1]} ${/State:\t(.*)/.exec(status)?.[1]}`,
      );
    }
  }
  const loops: string[] = [];
  for (const entry of await readdir("/sys/block")) {
    const backing = await readFile(`/sys/block/${entry}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.includes(stateDir)) loops.push(`${entry} ${backing.trim()}`);
  }
  const registry = await readdir(registryDir).catch(() => [] as string[]);
  const claimed: string[] = [];
  for (const slot of registry) {
    const owner = await readFile(`${registryDir}/${slot}/owner`, "utf8").catch(() => "");
    if (owner.includes(stateDir)) claimed.push(slot);
  }
  return {
    processes,
    cgroups: await listShellCgroups(cgroups, cgroupParent),
    // The host's whole mount table: a shell's mounts live only in its private namespaces.
    mounts: (await readFile("/proc/self/mountinfo", "utf8"))
      .split("\n")
      .map((line) => line.split(" ").slice(4, 5).join())
      .sort(),
    loops,
    uidSlots: claimed,
    shellDirs: await readdir(`${stateDir}/shells`).catch(() => [] as string[]),
  };
}

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
      await backend.create({
        shellId,
        language: "bash",
        runtime: "container",
        network: cycle % 2 ? "localhost" : "sealed",
        resources: SMALL,
        env: {},
      });
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
