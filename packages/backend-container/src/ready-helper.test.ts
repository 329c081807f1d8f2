import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { sleep } from "./internal/proc.js";
import { readJson, type HolderRecord } from "./internal/state.js";
import {
  bashSpec,
  hostReport,
  makeTestBackend,
  readyHelperPids,
  request,
} from "./internal/test-support.js";

/** The ready helpers waiting in a shell's cgroups. */
function readyHelpers(stateDir: string, shellId: string): Promise<number[]> {
  const cgroups = detectCgroups();
  if (typeof cgroups === "string") throw new Error(cgroups);
  return readyHelperPids(new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, shellId)));
}

/** Waits (up to 5 s) until the shell has `count` ready helpers; their pids. */
async function untilReady(stateDir: string, shellId: string, count = 1): Promise<number[]> {
  for (let i = 0; i < 100; i++) {
    const pids = await readyHelpers(stateDir, shellId);
    if (pids.length === count) return pids;
    await sleep(50);
  }
  throw new Error(`shell ${shellId} has no ready exec helper after 5 s`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.runIf(hostReport.available)("ready exec helpers", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
  }, 180_000);
  afterAll(() => cleanup());

  it("start after an exec once execs pause, and run the next exec as an ordinary one would", async () => {
    await backend.create(bashSpec("rh-a", { env: { FROM_SHELL: "shell" } }));
    const first = await backend.exec("rh-a", request(["true"]));
    expect(first.exitCode).toBe(0);
    const [pid] = await untilReady(stateDir, "rh-a");

    // The next exec is the waiting helper's: it leaves, and what the command sees is the same as
    // through a helper started for it.
    const probe = await backend.exec(
      "rh-a",
      request(
        [
          "sh",
          "-c",
          'echo "cwd=$(pwd) from=$FROM_SHELL req=$FROM_REQUEST stdin=$(readlink /proc/self/fd/0)"; echo err >&2; exit 3',
        ],
        { cwd: "/tmp", env: { FROM_REQUEST: "request" } },
      ),
    );
    expect(alive(pid!)).toBe(false);
    expect(probe).toMatchObject({
      exitCode: 3,
      stdout: "cwd=/tmp from=shell req=request stdin=/dev/null\n",
      stderr: "err\n",
    });

    // Input, the output limit and the wall clock, each through a waiting helper.
    await untilReady(stateDir, "rh-a");
    const echoed = await backend.exec("rh-a", request(["cat"], { stdin: "piped input" }));
    expect(echoed).toMatchObject({ exitCode: 0, stdout: "piped input" });
    await untilReady(stateDir, "rh-a");
    const cut = await backend.exec(
      "rh-a",
      request(["sh", "-c", "head -c 100000 /dev/zero"], { maxOutputBytes: 1000 }),
    );
    expect(cut).toMatchObject({ killReason: "output_limit", truncated: true });
    expect(cut.stdout.length).toBe(1000);
    await untilReady(stateDir, "rh-a");
    const slow = await backend.exec("rh-a", request(["sleep", "30"], { timeoutMs: 300 }));
    expect(slow.killReason).toBe("wall_clock");
  }, 60_000);

  it("waits in the shell's idle exec cgroup only: one at most, none while execs run", async () => {
    await backend.create(bashSpec("rh-b"));
    await backend.exec("rh-b", request(["true"]));
    await untilReady(stateDir, "rh-b");
    // Execs at once: one takes the waiting helper, the others start their own; afterwards one
    // helper waits again, not several.
    const results = await Promise.all(
      Array.from({ length: 4 }, (_, i) => backend.exec("rh-b", request(["echo", String(i)]))),
    );
    expect(results.map((result) => result.stdout)).toEqual(["0\n", "1\n", "2\n", "3\n"]);
    await untilReady(stateDir, "rh-b");
    await sleep(300);
    expect(await readyHelpers(stateDir, "rh-b")).toHaveLength(1);
  }, 60_000);

  it("leave the cgroup a terminal takes, so it is emptied and handed on when the terminal ends", async () => {
    await backend.create(bashSpec("rh-e"));
    await backend.exec("rh-e", request(["true"]));
    const [waiting] = await untilReady(stateDir, "rh-e");
    const terminal = await backend.spawn(
      "rh-e",
      { command: ["sh", "-c", "sleep 0.2"], env: {}, cwd: "/workspace" },
      { onOutput: () => undefined },
    );
    for (let i = 0; i < 40 && alive(waiting!); i++) await sleep(50);
    expect(alive(waiting!)).toBe(false);
    await terminal.exit;
    // The group the terminal left is the idle one again, with a helper of its own waiting.
    const [next] = await untilReady(stateDir, "rh-e");
    expect(next).not.toBe(waiting);
    expect((await backend.exec("rh-e", request(["echo", "after"]))).stdout).toBe("after\n");
  }, 60_000);

  it("are dismissed when unused for the idle time, and start again after the next exec", async () => {
    const short = await makeTestBackend({ readyHelperIdleMs: 400 });
    try {
      await short.backend.create(bashSpec("rh-idle"));
      await short.backend.exec("rh-idle", request(["true"]));
      const [waiting] = await untilReady(short.stateDir, "rh-idle");
      for (let i = 0; i < 40 && alive(waiting!); i++) await sleep(50);
      expect(alive(waiting!)).toBe(false);
      expect(await readyHelpers(short.stateDir, "rh-idle")).toEqual([]);
      expect((await short.backend.exec("rh-idle", request(["echo", "ok"]))).stdout).toBe("ok\n");
      await untilReady(short.stateDir, "rh-idle");
    } finally {
      await short.backend.close();
      await short.cleanup();
    }
  }, 60_000);

  it("exits when the shell's init dies on its own, so the shell's disk is free to start again", async () => {
    await backend.create(bashSpec("rh-f"));
    await backend.exec("rh-f", request(["true"]));
    const [waiting] = await untilReady(stateDir, "rh-f");
    const holder = await readJson<HolderRecord>(`${stateDir}/shells/rh-f/holder.json`);
    process.kill(holder!.initPid, "SIGKILL");
    for (let i = 0; i < 40 && alive(waiting!); i++) await sleep(50);
    expect(alive(waiting!)).toBe(false);
    await backend.restart("rh-f");
    expect((await backend.exec("rh-f", request(["echo", "back"]))).stdout).toBe("back\n");
  }, 60_000);

  it("stay out of the way of a paused shell's file operations, and serve after the resume", async () => {
    await backend.create(bashSpec("rh-g"));
    await backend.exec("rh-g", request(["sh", "-c", "echo kept > /workspace/f"]));
    const [waiting] = await untilReady(stateDir, "rh-g");
    await backend.pause("rh-g");
    // A read beside the frozen processes takes a cgroup of its own: the waiting helper stays.
    expect(new TextDecoder().decode(await backend.files.read("rh-g", "/workspace/f", 64))).toBe(
      "kept\n",
    );
    expect(alive(waiting!)).toBe(true);
    await backend.resume("rh-g");
    expect((await backend.exec("rh-g", request(["cat", "/workspace/f"]))).stdout).toBe("kept\n");
    expect(alive(waiting!)).toBe(false); // that exec was its
  }, 60_000);

  it("go with the shell's stop, restart and delete, and with the backend's close", async () => {
    await backend.create(bashSpec("rh-c"));
    await backend.exec("rh-c", request(["true"]));
    const [beforeRestart] = await untilReady(stateDir, "rh-c");
    await backend.restart("rh-c");
    expect(alive(beforeRestart!)).toBe(false);
    // The restarted shell's execs work (none is given a helper of the shell's earlier init).
    expect((await backend.exec("rh-c", request(["echo", "again"]))).stdout).toBe("again\n");
    const [beforeDelete] = await untilReady(stateDir, "rh-c");
    await backend.destroy("rh-c");
    expect(alive(beforeDelete!)).toBe(false);

    // close: the waiting helpers are told no exec comes, and exit; their shells run on.
    await backend.create(bashSpec("rh-d"));
    await backend.exec("rh-d", request(["true"]));
    const [waiting] = await untilReady(stateDir, "rh-d");
    await backend.close();
    for (let i = 0; i < 40 && alive(waiting!); i++) await sleep(50);
    expect(alive(waiting!)).toBe(false);
  }, 60_000);
});
