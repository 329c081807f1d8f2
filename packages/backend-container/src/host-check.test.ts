import { afterEach, describe, expect, it } from "vitest";
import { ContainerBackend } from "./container-backend.js";
import { detectCgroups } from "./internal/cgroups.js";
import { checkContainerHost } from "./internal/host-check.js";

describe("container host readiness", () => {
  const path = process.env.PATH;
  afterEach(() => {
    process.env.PATH = path;
  });

  it("offers only the container class, and names what is missing with the apt command to fix it", async () => {
    // Hide the tools the runtime calls: the report must say which and how to install them.
    process.env.PATH = "/nonexistent";
    const report = await checkContainerHost();
    expect(report.available).toBe(false);
    expect(report.reason).toMatch(/mmdebstrap/);
    expect(report.installCommand).toMatch(/^apt-get install -y .*mmdebstrap/);
    expect(report.installCommand).toMatch(/e2fsprogs/);
    expect(report.installCommand).toMatch(/gcc/);

    const backend = new ContainerBackend({ stateDir: "/nonexistent/state" });
    const offered = await backend.availability();
    expect(offered).toEqual([
      {
        runtime: "container",
        available: false,
        backend: "container",
        reason: expect.stringMatching(/apt-get install/),
      },
    ]);
    await expect(
      backend.create({
        shellId: "refused",
        language: "bash",
        runtime: "container",
        network: "sealed",
        resources: { cpu: 1, memoryMb: 64, pids: 32, diskMb: 32 },
        env: {},
      }),
    ).rejects.toMatchObject({ code: "unavailable" });
  });

  it("reads cgroup v2 and v1 (also co-mounted and hybrid) layouts from mountinfo", () => {
    const v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    // A unified mount without readable controllers (as in hybrid mode) falls back to v1.
    const v1 = [
      "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
      "36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
      "37 25 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
      "38 25 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
    ].join("\n");
    expect(detectCgroups(v1, () => "")).toEqual({
      version: 1,
      memory: "/sys/fs/cgroup/memory",
      pids: "/sys/fs/cgroup/pids",
      cpu: "/sys/fs/cgroup/cpu,cpuacct",
      cpuacct: "/sys/fs/cgroup/cpu,cpuacct",
    });
    // The freezer hierarchy, when mounted, is what pauses shells on v1.
    const freezer = "39 25 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n";
    expect(detectCgroups(v1 + "\n" + freezer, () => "")).toMatchObject({
      version: 1,
      freezer: "/sys/fs/cgroup/freezer",
    });
    expect(
      detectCgroups("36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", () => ""),
    ).toMatch(/not mounted: pids, cpu/);
    // v2 is chosen only when its controllers are really there.
    expect(detectCgroups(v2, () => "cpuset cpu io memory hugetlb pids rdma misc\n")).toEqual({
      version: 2,
      root: "/sys/fs/cgroup",
    });
    expect(detectCgroups(v2 + v1, () => "")).toMatchObject({ version: 1 });
  });
});
