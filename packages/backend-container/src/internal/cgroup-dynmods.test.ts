import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, describe, expect, it } from "vitest";
import { favorDynmods, favorsDynmods } from "./cgroup-dynmods.js";
import { detectCgroups } from "./cgroups.js";
import { run } from "./proc.js";
import { hostReport } from "./test-support.js";

const V1_LINE =
  "36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory";
const V2_LINE =
  "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate";
const mountPoints = () => readFileSync("/proc/self/mountinfo", "utf8");

describe("the kernel's cgroup favordynmods mode", () => {
  it("is read from the cgroup mounts' options and the boot parameter", () => {
    expect(favorsDynmods(`${V1_LINE}\n${V2_LINE}\n`, "BOOT_IMAGE=/vmlinuz ro quiet")).toBe(false);
    expect(favorsDynmods(`${V2_LINE},favordynmods\n`, "ro")).toBe(true);
    expect(
      favorsDynmods(`${V1_LINE}\n${V1_LINE.replace("rw,memory", "rw,favordynmods,name=x")}`, ""),
    ).toBe(true);
    expect(favorsDynmods(V1_LINE, "ro cgroup_favordynmods=true")).toBe(true);
    // An option of the mount point (left of " - ") is not the hierarchy's.
    expect(favorsDynmods(V1_LINE.replace("relatime", "favordynmods"), "")).toBe(false);
  });

  it("is never switched on cgroup v2, where the host's own mount decides: it says how", async () => {
    const state = await favorDynmods(
      { version: 2, root: "/sys/fs/cgroup" },
      "/nonexistent/x",
      false,
    );
    expect(state).toMatchObject({ state: "off" });
    expect(state.state === "off" && state.reason).toContain("remount,favordynmods");
  });

  const v1 = (() => {
    const host = detectCgroups();
    return typeof host !== "string" && host.version === 1 ? host : null;
  })();
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it.runIf(hostReport.available && v1)(
    "is switched on a cgroup v1 host by mounting a hierarchy of no controller",
    async () => {
      const dir = await mkdtemp(`${tmpdir()}/shells-dynmods-`);
      dirs.push(dir);
      const mountPoint = `${dir}/mnt`;
      // As on a host where nobody has it on (another test's server may have).
      const state = await favorDynmods(v1!, mountPoint, false);
      expect(state).toEqual({ state: "mounted", mountPoint });
      const line = mountPoints()
        .split("\n")
        .find((entry) => entry.split(" ")[4] === mountPoint);
      expect(line).toMatch(/ - cgroup \S+ \S*favordynmods/);
      expect(favorsDynmods()).toBe(true);
      expect((await run("umount", [mountPoint])).code).toBe(0);
      expect(mountPoints()).not.toContain(mountPoint);
    },
  );
});
