import { writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerBackend, type ContainerBackendOptions } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { sleep } from "./internal/proc.js";
import { hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

const cgroups = detectCgroups();
/** Pausing needs a freezer: v2, or v1 with the freezer hierarchy mounted. */
const canFreeze =
  typeof cgroups !== "string" && (cgroups.version === 2 || cgroups.freezer !== undefined);
/** File reads beside a frozen shell need the freezer in a hierarchy of its own (v1). */
const readsWhilePaused = typeof cgroups !== "string" && cgroups.version === 1;

/** A counter that lives only in the memory of a background shell loop, published every 20 ms. */
const COUNTER =
  "i=0; while :; do i=$((i+1)); echo $i > /workspace/c.tmp && mv /workspace/c.tmp /workspace/count; sleep 0.02; done";

describe.runIf(hostReport.available && canFreeze)("pausing a container shell", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let options: ContainerBackendOptions;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, options, cleanup } = await makeTestBackend());
  });
  afterAll(async () => {
    await cleanup();
  });

  const create = (shellId: string, diskMb = SMALL.diskMb) =>
    backend.create({
      shellId,
      language: "bash",
      runtime: "container",
      network: "sealed",
      resources: { ...SMALL, diskMb },
      env: {},
    });
  const sh = (shellId: string, script: string) =>
    backend.exec(shellId, request(["sh", "-c", script]));
  const count = async (shellId: string) =>
    Number(new TextDecoder().decode(await backend.files.read(shellId, "/workspace/count", 64)));
  /** Waits (up to 5 s) for the counter's first write: it runs in the background of its exec. */
  const counting = async (shellId: string) => {
    for (let i = 0; i < 100; i++) {
      if ((await sh(shellId, "test -s /workspace/count")).exitCode === 0) return;
      await sleep(50);
    }
    throw new Error(`the counter in ${shellId} never wrote`);
  };
  const shellCgroup = (shellId: string) => {
    if (typeof cgroups === "string") throw new Error(cgroups);
    return new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, shellId));
  };

  it.runIf(readsWhilePaused)(
    "holds a background process still and lets it run on with its in-memory state",
    async () => {
      await create("pause-a");
      await sh("pause-a", `(${COUNTER}) >/dev/null 2>&1 &`);
      await counting("pause-a");
      const pidBefore = (await sh("pause-a", "pgrep -o -f 'i=0; while'")).stdout.trim();
      const { info, pause } = await backend.pause("pause-a");
      expect(info.state).toBe("paused");
      expect(pause).toMatchObject({ method: "freeze", memoryReleased: false });
      const frozenAt = await count("pause-a");
      expect(frozenAt).toBeGreaterThan(0);
      await sleep(500);
      // Nothing runs while paused; the files API still reads the shell's files.
      expect(await count("pause-a")).toBe(frozenAt);
      await expect(sh("pause-a", "true")).rejects.toMatchObject({ code: "paused" });
      expect(await backend.resume("pause-a")).toMatchObject({ state: "running" });
      await sleep(500);
      const after = await count("pause-a");
      // The same process counted on from where it stood: not restarted, not lost.
      expect(after).toBeGreaterThan(frozenAt);
      expect(after).toBeLessThan(frozenAt + 60);
      expect((await sh("pause-a", "pgrep -o -f 'i=0; while'")).stdout.trim()).toBe(pidBefore);
    },
    60_000,
  );

  it.runIf(readsWhilePaused)(
    "freezes the processes of a shell that started outside the freezer hierarchy",
    async () => {
      await create("pause-f");
      await sh("pause-f", `(${COUNTER}) >/dev/null 2>&1 &`);
      await counting("pause-f");
      // As a shell started before the freezer was in use: every process in the root freezer group.
      const group = shellCgroup("pause-f");
      if (typeof cgroups === "string" || cgroups.version !== 1 || !cgroups.freezer)
        throw new Error("needs cgroup v1 with a freezer");
      for (const pid of await group.members())
        await writeFile(`${cgroups.freezer}/cgroup.procs`, String(pid)).catch(() => undefined);
      await backend.pause("pause-f");
      const frozenAt = await count("pause-f");
      await sleep(400);
      expect(await count("pause-f")).toBe(frozenAt);
      await backend.resume("pause-f");
      await sleep(300);
      expect(await count("pause-f")).toBeGreaterThan(frozenAt);
    },
    60_000,
  );

  it("loses no file across 20 pauses and resumes with writes in between", async () => {
    await create("pause-b");
    for (let round = 1; round <= 20; round++) {
      const write = await sh(
        "pause-b",
        `echo round-${round} > /workspace/f${round}.txt && echo ${round} >> /workspace/log`,
      );
      expect(write.exitCode, write.stderr).toBe(0);
      await backend.pause("pause-b");
      if (readsWhilePaused) {
        const log = new TextDecoder().decode(
          await backend.files.read("pause-b", "/workspace/log", 4096),
        );
        expect(log.trim().split("\n").at(-1)).toBe(String(round));
      }
      await backend.resume("pause-b");
    }
    const check = await sh(
      "pause-b",
      "cat /workspace/log | tr '\\n' ' '; echo; for i in $(seq 1 20); do cat /workspace/f$i.txt; done | sort -u | wc -l",
    );
    const [log, distinct] = check.stdout.trim().split("\n");
    expect(log?.trim()).toBe(Array.from({ length: 20 }, (_, i) => i + 1).join(" "));
    expect(Number(distinct)).toBe(20);
    // And they are on the shell's disk, not only in memory: a stop and start keeps them.
    await backend.stop("pause-b");
    await backend.start("pause-b");
    expect((await sh("pause-b", "cat /workspace/f20.txt")).stdout).toBe("round-20\n");
  }, 120_000);

  it("freezes a running shell for the length of a snapshot and thaws it after", async () => {
    await create("pause-c", 256);
    await sh("pause-c", "head -c 120000000 /dev/urandom > /workspace/big");
    const group = shellCgroup("pause-c");
    let sawFrozen = false;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        if (await group.isFrozen()) sawFrozen = true;
        await sleep(2);
      }
    })();
    const snapshot = await backend.snapshot("pause-c", "still");
    watching = false;
    await watch;
    expect(snapshot.sizeBytes).toBeGreaterThan(100_000_000);
    expect(sawFrozen).toBe(true);
    expect(await group.isFrozen()).toBe(false);
    expect((await sh("pause-c", "echo running")).stdout).toBe("running\n");
  }, 120_000);

  it("lets an exec caught by a pause finish after resume", async () => {
    await create("pause-d");
    const pending = sh("pause-d", "sleep 0.5; echo finished");
    await sleep(150);
    await backend.pause("pause-d");
    await sleep(800);
    await backend.resume("pause-d");
    const result = await pending;
    expect(result).toMatchObject({ exitCode: 0, stdout: "finished\n" });
  }, 60_000);

  it("reports a paused shell as paused after the control plane restarts", async () => {
    await create("pause-e");
    await backend.pause("pause-e");
    const again = new ContainerBackend(options);
    expect((await again.list()).find((s) => s.shellId === "pause-e")?.state).toBe("paused");
    await again.resume("pause-e");
    expect((await again.exec("pause-e", request(["echo", "ok"]))).stdout).toBe("ok\n");
  }, 60_000);
});
