import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { sleep } from "./internal/proc.js";
import { bashSpec, hostReport, makeTestBackend, request } from "./internal/test-support.js";

const FORK_BOMB = "f(){ f|f& }; f";

describe.runIf(hostReport.available)("a shell's process limit", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
  });
  afterAll(async () => {
    await cleanup();
  });

  const create = (shellId: string) => backend.create(bashSpec(shellId));
  const shellCgroup = (shellId: string) => {
    const cgroups = detectCgroups();
    if (typeof cgroups === "string") throw new Error(cgroups);
    return new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, shellId));
  };

  it("kills the exec that fills it, not an innocent exec running beside it", async () => {
    await create("pids-a");
    const innocent = backend.exec("pids-a", request(["sh", "-c", "sleep 5; echo alive"]));
    await sleep(500); // the innocent exec has forked its `sleep` before the bomb starts
    const bomb = await backend.exec("pids-a", request(["sh", "-c", FORK_BOMB + "; sleep 5"]));
    expect(bomb, JSON.stringify(bomb).slice(0, 300)).toMatchObject({ killReason: "pids" });
    const survivor = await innocent;
    expect(survivor.exitCode).toBe(0);
    expect(survivor.stdout.trim()).toBe("alive");
    expect(survivor.killReason).toBeUndefined();
  }, 60_000);

  it("ends a detached fork bomb after its exec returned, and the shell takes execs again", async () => {
    await create("pids-b");
    // A server started by an earlier, well-behaved exec must survive the bomb's end.
    await backend.exec("pids-b", request(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"]));
    const bomb = await backend.exec("pids-b", request(["sh", "-c", FORK_BOMB]));
    // It returns at once; its children run on (reported as pids when they filled the limit already).
    expect([undefined, "pids"]).toContain(bomb.killReason);
    const deadline = Date.now() + 5_000;
    let echo = await backend.exec("pids-b", request(["echo", "ok"]));
    while (echo.exitCode !== 0 && Date.now() < deadline) {
      await sleep(200);
      echo = await backend.exec("pids-b", request(["echo", "ok"]));
    }
    expect(echo.exitCode).toBe(0);
    expect(echo.stdout).toBe("ok\n");
    // Count what runs in the shell once the watch has had a moment to end the bomb.
    const count_ = () =>
      backend.exec(
        "pids-b",
        request([
          "sh",
          "-c",
          "ls -d /proc/[0-9]* | wc -l; cat /proc/[0-9]*/comm | grep -c '^sleep$'",
        ]),
      );
    let processes = await count_();
    while (processes.exitCode !== 0 && Date.now() < deadline + 3_000) {
      await sleep(200);
      processes = await count_();
    }
    expect(processes.exitCode, processes.stderr).toBe(0);
    const [count, sleepers] = processes.stdout.trim().split("\n").map(Number);
    // init, the server's sleep, its drainer, and this exec's sh, ls, wc, pgrep: no bomb left.
    expect(count).toBeLessThan(12);
    expect(sleepers).toBe(1);
    // The bomb's cgroup is gone; the server's stays while it runs.
    await sleep(500);
    expect((await shellCgroup("pids-b").execGroups()).length).toBeLessThanOrEqual(2);
  }, 60_000);

  it("hands an exec's emptied cgroup to the next exec only when its counters cannot blame it", async () => {
    await create("pids-c");
    const cgroup = shellCgroup("pids-c");
    const limit = Number(await readFile(`${cgroup.pidsDir}/pids.max`, "utf8"));
    // Near the limit and back, with no fork refused: not a kill, but its peak stays recorded.
    const crowd = await backend.exec(
      "pids-c",
      request(["sh", "-c", `for i in $(seq ${limit - 6}); do sleep 1 & done; wait`]),
    );
    expect(crowd.exitCode, crowd.stderr).toBe(0);
    expect(crowd.killReason).toBeUndefined();
    // The group it ran in is not kept: a later exec there would look like it had filled the limit.
    for (const group of await cgroup.execGroups())
      expect(Number(await readFile(`${group.pidsDir}/pids.peak`, "utf8"))).toBeLessThan(
        limit * 0.9,
      );
    // Quiet execs after it reuse one group, and none is blamed for anything.
    for (let i = 0; i < 5; i++)
      expect(await backend.exec("pids-c", request(["true"]))).toMatchObject({ exitCode: 0 });
    const groups = await cgroup.execGroups();
    expect(groups).toHaveLength(1);
    const quiet = await backend.exec("pids-c", request(["true"]));
    expect(quiet.killReason).toBeUndefined();
    expect((await cgroup.execGroups()).map((group) => group.name)).toEqual(
      groups.map((group) => group.name),
    );
  }, 60_000);
});
