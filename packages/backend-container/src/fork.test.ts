import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { bashSpec, hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

describe.runIf(hostReport.available)("forking a container shell", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
  });
  afterAll(async () => {
    await cleanup();
  });

  const sh = (shellId: string, script: string) =>
    backend.exec(shellId, request(["sh", "-c", script]));
  const forkOf = async (parent: string, children: string[]) => {
    const capture = await backend.captureFork(parent);
    try {
      for (const child of children)
        await backend.create(bashSpec(child, { from: { captureId: capture.captureId } }));
    } finally {
      await backend.releaseFork(capture.captureId);
    }
    return capture;
  };

  it("gives each fork the parent's files, owned by the fork's own root, and its own uid range", async () => {
    await backend.create(bashSpec("fork-p"));
    await sh(
      "fork-p",
      "mkdir -p /workspace/app /opt/tool && echo v1 > /workspace/app/main.txt && echo t > /opt/tool/x && rm -f /etc/motd",
    );
    const capture = await forkOf("fork-p", ["fork-c1"]);
    expect(capture.method).toBe("layered_copy_once");
    expect(capture.frozenMs).toBeGreaterThan(0);
    const child = await sh(
      "fork-c1",
      "cat /workspace/app/main.txt /opt/tool/x; test -e /etc/motd && echo motd || echo no-motd; stat -c %u:%g /workspace/app/main.txt; echo new > /workspace/app/new.txt && stat -c %u /workspace/app/new.txt",
    );
    expect(child.stdout).toBe("v1\nt\nno-motd\n0:0\n0\n");
    // The fork's root is a host uid of its own, not its parent's.
    const hostUid = async (shellId: string) => {
      const cgroups = detectCgroups();
      if (typeof cgroups === "string") throw new Error(cgroups);
      const group = new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, shellId));
      // The shell's own processes: host root is only the keeper and the helpers.
      const uids = new Set<string>();
      for (const pid of await group.members()) {
        const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
        const uid = /^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1];
        if (uid && uid !== "0") uids.add(uid);
      }
      expect(uids.size).toBe(1);
      return [...uids][0];
    };
    await sh("fork-p", "sleep 30 >/dev/null 2>&1 &");
    await sh("fork-c1", "sleep 30 >/dev/null 2>&1 &");
    expect(await hostUid("fork-c1")).not.toBe(await hostUid("fork-p"));
  }, 120_000);

  it("captures one instant of a shell that keeps writing, and leaves it running", async () => {
    await backend.create(bashSpec("fork-w"));
    // Each step appends to a log and then records the count: the two agree at every instant
    // except between the two writes of one step.
    await sh(
      "fork-w",
      "(i=0; while :; do i=$((i+1)); echo $i >> /workspace/log; echo $i > /workspace/l.tmp; mv /workspace/l.tmp /workspace/last; done) >/dev/null 2>&1 &",
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    await forkOf("fork-w", ["fork-w1"]);
    const seen = await sh(
      "fork-w1",
      "tail -n 1 /workspace/log; cat /workspace/last; wc -l < /workspace/log",
    );
    const [tail, last, lines] = seen.stdout.trim().split("\n").map(Number);
    expect(tail! - last!).toBeGreaterThanOrEqual(0);
    expect(tail! - last!).toBeLessThanOrEqual(1);
    expect(lines).toBe(tail);
    // The fork has no copy of the writer (filesystem only), and the parent's writer runs on.
    expect((await sh("fork-w1", "sleep 0.3; tail -n 1 /workspace/log")).stdout.trim()).toBe(
      String(tail),
    );
    const logLines = async () => Number((await sh("fork-w", "wc -l < /workspace/log")).stdout);
    const parentBefore = await logLines();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await logLines()).toBeGreaterThan(parentBefore);
  }, 120_000);

  it("forks a paused shell without resuming it, and forks of forks work", async () => {
    await backend.create(bashSpec("fork-q"));
    await sh("fork-q", "echo gen0 > /workspace/g");
    await backend.pause("fork-q");
    await forkOf("fork-q", ["fork-q1"]);
    expect((await backend.list()).find((s) => s.shellId === "fork-q")?.state).toBe("paused");
    await backend.resume("fork-q");
    await sh("fork-q1", "echo gen1 >> /workspace/g");
    await forkOf("fork-q1", ["fork-q2"]);
    expect((await sh("fork-q2", "cat /workspace/g; stat -c %u /workspace/g")).stdout).toBe(
      "gen0\ngen1\n0\n",
    );
  }, 120_000);

  it("keeps a fork's snapshots, restarts and wipe working on its own disk", async () => {
    await backend.create(bashSpec("fork-s"));
    await sh("fork-s", "echo base > /workspace/b");
    await forkOf("fork-s", ["fork-s1"]);
    await backend.snapshot("fork-s1", "one");
    await sh("fork-s1", "echo changed > /workspace/b");
    await backend.restore("fork-s1", "one");
    expect((await sh("fork-s1", "cat /workspace/b; stat -c %u /workspace/b")).stdout).toBe(
      "base\n0\n",
    );
    await backend.stop("fork-s1");
    await backend.start("fork-s1");
    expect((await sh("fork-s1", "cat /workspace/b")).stdout).toBe("base\n");
    await backend.wipeState("fork-s1");
    expect(
      (
        await sh(
          "fork-s1",
          "test -e /workspace/b || echo gone; touch /workspace/n; stat -c %u /workspace/n",
        )
      ).stdout,
    ).toBe("gone\n0\n");
  }, 120_000);

  it("refuses a capture that does not fit the new shell, and an unknown capture", async () => {
    await backend.create(bashSpec("fork-r"));
    const capture = await backend.captureFork("fork-r");
    try {
      await expect(
        backend.create(
          bashSpec("fork-r1", {
            from: { captureId: capture.captureId },
            resources: { ...SMALL, diskMb: SMALL.diskMb * 2 },
          }),
        ),
      ).rejects.toMatchObject({ code: "unsupported" });
    } finally {
      await backend.releaseFork(capture.captureId);
    }
    await expect(
      backend.create(bashSpec("fork-r2", { from: { captureId: capture.captureId } })),
    ).rejects.toMatchObject({ code: "failed" });
  }, 60_000);
});
