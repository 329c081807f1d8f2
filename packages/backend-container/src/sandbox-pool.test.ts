import { lstat, readFile, readdir, readlink, rm, rmdir, symlink } from "node:fs/promises";
import { createServer } from "node:net";
import { basename } from "node:path";
import type { ResolvedResources } from "@shells/contract";
import { describeSandboxBackend } from "@shells/sandbox/conformance";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContainerBackend, type ContainerBackendOptions } from "./container-backend.js";
import {
  detectCgroups,
  ShellCgroup,
  shellCgroupName,
  type CgroupHost,
} from "./internal/cgroups.js";
import { readJson, writeJson, type ShellRecord } from "./internal/state.js";
import {
  bashSpec as spec,
  CONTAINER_CAPABILITIES,
  hostObjects,
  hostReport,
  makeTestBackend,
  readyHelperPids,
  request,
  SMALL,
} from "./internal/test-support.js";

const POOL_DISK_MB = SMALL.diskMb;

describe.runIf(hostReport.available)("the container backend's warm sandbox pool", () => {
  const cgroupParent = `shells-pooltest-${process.pid}`;
  const registryDir = `/tmp/shells-pooltest-uid-slots-${process.pid}`;
  let backend: ContainerBackend;
  let options: ContainerBackendOptions;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  let cgroups: CgroupHost;

  beforeAll(async () => {
    ({ backend, stateDir, options, cleanup } = await makeTestBackend({
      cgroupParent,
      uidRegistryDir: registryDir,
      pool: { bash: 2 },
      warmDiskMb: POOL_DISK_MB,
    }));
    const detected = detectCgroups();
    if (typeof detected === "string") throw new Error(detected);
    cgroups = detected;
    await backend.recover();
    await backend.warm();
  }, 120_000);
  afterAll(async () => {
    await backend.close();
    await cleanup();
    const roots =
      cgroups.version === 2 ? [cgroups.root] : [cgroups.memory, cgroups.pids, cgroups.cpu];
    for (const root of roots) await rmdir(`${root}/${cgroupParent}`).catch(() => undefined);
    await rm(registryDir, { recursive: true, force: true });
  });

  const boxes = async () => (await readdir(`${stateDir}/boxes`)).sort();
  /** The pooled sandbox a shell was claimed from, read from its symlink; null for a shell of its own. */
  const boxOf = async (shellId: string) =>
    (await lstat(`${stateDir}/shells/${shellId}`)).isSymbolicLink()
      ? basename(await readlink(`${stateDir}/shells/${shellId}`))
      : null;
  const cgroupOf = (boxId: string) =>
    new ShellCgroup(cgroups, cgroupParent, shellCgroupName(stateDir, boxId));
  const memoryLimitOf = async (cgroup: ShellCgroup) =>
    Number(
      await readFile(
        `${cgroup.dirs[0]}/${cgroups.version === 2 ? "memory.max" : "memory.limit_in_bytes"}`,
        "utf8",
      ),
    );
  const poolReport = async () => (await backend.availability())[0]?.sandboxPool;
  const sh = (shellId: string, script: string) =>
    backend.exec(shellId, request(["bash", "-c", script]));

  it("serves a create from a pooled sandbox, with the shell's hostname, limits, network and env", async () => {
    const ready = await boxes();
    expect(ready).toHaveLength(2);
    // Each waits with an exec helper already in it: the first exec starts no process.
    for (const box of ready) expect(await readyHelperPids(cgroupOf(box))).toHaveLength(1);
    expect((await poolReport())?.languages).toEqual([
      { language: "bash", internet: false, ready: 2, target: 2 },
    ]);
    const resources: ResolvedResources = {
      cpu: 0.5,
      memoryMb: 192,
      pids: 48,
      diskMb: POOL_DISK_MB,
    };
    await backend.create(
      spec("pool-claimed", { network: "localhost", resources, env: { GREETING: "hi" } }),
    );
    const boxId = await boxOf("pool-claimed");
    expect(ready).toContain(boxId);

    const seen = await sh(
      "pool-claimed",
      'cat /proc/sys/kernel/hostname; echo "$GREETING"; (exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 | grep -q refused && echo refused',
    );
    expect(seen.stdout).toBe("pool-claimed\nhi\nrefused\n");
    const cgroup = cgroupOf(boxId!);
    expect(await memoryLimitOf(cgroup)).toBe(192 * 1024 * 1024);
    expect((await readFile(`${cgroup.pidsDir}/pids.max`, "utf8")).trim()).toBe("48");
    // The CPU the box used while pooled is not the shell's.
    const counted = (await backend.usage("pool-claimed"))!.cpuUsec;
    const raw = (await cgroup.usage())!.cpuUsec;
    expect(counted).toBeLessThan(raw);

    // A sealed shell from the same pool keeps its loopback down.
    await backend.create(spec("pool-sealed"));
    expect(await boxOf("pool-sealed")).not.toBeNull();
    expect(
      (
        await sh(
          "pool-sealed",
          "(exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 | grep -q unreachable && echo unreachable",
        )
      ).stdout,
    ).toBe("unreachable\n");
    await backend.destroy("pool-sealed");
  });

  it("refills in the background after a claim, and reports the pool's memory", async () => {
    await backend.warm();
    const report = await poolReport();
    expect(report?.languages).toEqual([{ language: "bash", internet: false, ready: 2, target: 2 }]);
    expect(report?.memoryMb).toBe(2 * report!.memoryMbEach);
    expect(report?.memoryBytes).toBeGreaterThan(0);
    expect(backend.pooledMemoryMb()).toBe(report?.memoryMb);
  });

  it("keeps a claimed shell's files and processes away from the next pooled one", async () => {
    await backend.warm();
    await sh("pool-claimed", "echo secret > /workspace/mine; echo secret > /tmp/mine");
    await backend.exec(
      "pool-claimed",
      request(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &"]),
    );
    await backend.create(spec("pool-next", { network: "localhost" }));
    expect(await boxOf("pool-next")).not.toBeNull();
    // Its first entry is a terminal's: the name and loopback are there for it too.
    let seen = "";
    const terminal = await backend.spawn(
      "pool-next",
      {
        command: [
          "bash",
          "-c",
          "cat /proc/sys/kernel/hostname; (exec 3<>/dev/tcp/127.0.0.1/9) 2>&1 | grep -q refused && echo refused",
        ],
        env: {},
        cwd: "/workspace",
      },
      { onOutput: (_stream, chunk) => void (seen += Buffer.from(chunk).toString("utf8")) },
    );
    await terminal.exit;
    expect(seen).toBe("pool-next\nrefused\n");
    const next = await sh(
      "pool-next",
      "ls -A /workspace; cat /tmp/mine 2>&1; for p in /proc/[0-9]*; do cat $p/comm; done | grep -c sleep",
    );
    expect(next.stdout).toBe("cat: /tmp/mine: No such file or directory\n0\n");
    expect((await sh("pool-claimed", "cat /workspace/mine")).stdout).toBe("secret\n");
    await backend.destroy("pool-next");
  });

  it("starts a sandbox of its own for a disk size the pool does not hold", async () => {
    await backend.warm();
    const before = await boxes();
    await backend.create(spec("pool-other-size", { resources: { ...SMALL, diskMb: 32 } }));
    expect(await boxOf("pool-other-size")).toBeNull();
    expect(await boxes()).toEqual(before);
    expect((await sh("pool-other-size", "echo ok")).stdout).toBe("ok\n");
    await backend.destroy("pool-other-size");
  });

  it("tears down a claim a crash cut, before or after the shell's symlink was made", async () => {
    await backend.warm();
    const next = new ContainerBackend(options);
    const claimedBox = await boxOf("pool-claimed");
    const [cutBefore, cutAfter] = (await boxes()).filter((boxId) => boxId !== claimedBox);
    // A claim's intent written (the box names the shell) and nothing else.
    const claimed = async (boxId: string, shellId: string) => {
      const file = `${stateDir}/boxes/${boxId}/shell.json`;
      const record = (await readJson<ShellRecord>(file))!;
      await writeJson(file, { ...record, shellId, phase: "creating" });
    };
    await claimed(cutBefore!, "cut-before-link");
    await claimed(cutAfter!, "cut-after-link");
    await symlink(`../boxes/${cutAfter}`, `${stateDir}/shells/cut-after-link`);
    // The first backend is gone (as in a crash): nothing of its pool was closed.
    await next.recover();
    const ids = (await next.list()).map((s) => s.shellId);
    expect(ids).not.toContain("cut-after-link");
    expect(ids).not.toContain("cut-before-link");
    expect(await readdir(`${stateDir}/shells`)).not.toContain("cut-after-link");
    const census = await hostObjects(cgroups, cgroupParent, stateDir, registryDir);
    // What is left is the one claimed shell's, nothing of the cut claims.
    expect(await boxes()).toEqual([claimedBox]);
    expect(census.cgroups).toHaveLength(1);
    expect(census.uidSlots).toHaveLength(1);
    expect(census.loops).toHaveLength(1);
    backend = next;
  });

  it("re-adopts a claimed shell after a restart and discards the unclaimed pooled ones", async () => {
    const first = new ContainerBackend({ ...options });
    await first.warm();
    expect(await boxes()).toHaveLength(3);
    await first.create(spec("pool-adopted", { env: { KEPT: "yes" } }));
    await sh("pool-adopted", "echo still > /workspace/here");
    await first.warm();
    // No close: the next process finds the first one's pool as a crash left it.
    const next = new ContainerBackend({ ...options, pool: {} });
    await next.recover();
    backend = next;
    const adoptedBox = await boxOf("pool-adopted");
    expect((await boxes()).sort()).toEqual([await boxOf("pool-claimed"), adoptedBox].sort());
    const states = new Map((await next.list()).map((s) => [s.shellId, s.state]));
    expect(states.get("pool-adopted")).toBe("running");
    expect(
      (await sh("pool-adopted", 'cat /workspace/here /proc/sys/kernel/hostname; echo "$KEPT"'))
        .stdout,
    ).toBe("still\npool-adopted\nyes\n");
    // Stop and start: the shell starts again in its box, under its own name and limits.
    await next.stop("pool-adopted");
    await next.start("pool-adopted");
    expect((await sh("pool-adopted", "cat /workspace/here")).stdout).toBe("still\n");
    expect(await memoryLimitOf(cgroupOf(adoptedBox!))).toBe(SMALL.memoryMb * 1024 * 1024);
    // Destroy removes the box, its symlink and all it held.
    await next.destroy("pool-adopted");
    await next.destroy("pool-claimed");
    expect(await boxes()).toEqual([]);
    expect(await hostObjects(cgroups, cgroupParent, stateDir, registryDir)).toMatchObject({
      processes: [],
      cgroups: [],
      loops: [],
      uidSlots: [],
      shellDirs: [],
    });
    await first.close();
  });
});

// The shared conformance suite, against shells claimed from a warm pool (a create the pool cannot
// serve at once, or of another disk size, starts a sandbox of its own as before).
describe.runIf(hostReport.available)("container backend with a warm sandbox pool", () => {
  describeSandboxBackend("container (pooled)", CONTAINER_CAPABILITIES, async () => {
    const { backend, cleanup } = await makeTestBackend({
      pool: { bash: 3 },
      warmDiskMb: 64,
    });
    await backend.recover();
    await backend.warm();
    return { backend, runtime: "container", language: "bash", cleanup };
  });
});

/** A stand-in egress proxy on a unix socket: records each PROXY line and answers with its name. */
async function fakeProxy(path: string, name: string) {
  const lines: string[] = [];
  const server = createServer((socket) => {
    let buffered = "";
    socket.on("data", (chunk) => {
      buffered += chunk.toString("latin1");
      const end = buffered.indexOf("\r\n\r\n", buffered.indexOf("\r\n") + 2);
      if (end < 0) return;
      lines.push(buffered.slice(0, buffered.indexOf("\r\n")));
      const body = `via ${name}\n`;
      socket.end(`HTTP/1.0 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { lines, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe.runIf(hostReport.available)(
  "the warm pool's sandboxes for shells with an egress proxy",
  () => {
    let backend: ContainerBackend;
    let stateDir: string;
    let cleanup: () => Promise<void>;

    beforeAll(async () => {
      ({ backend, stateDir, cleanup } = await makeTestBackend({
        pool: { "bash:internet": 1 },
        warmDiskMb: POOL_DISK_MB,
      }));
      await backend.recover();
      await backend.warm();
    }, 120_000);
    afterAll(async () => {
      await backend.close();
      await cleanup();
    });

    const claimedBox = async (shellId: string) =>
      (await lstat(`${stateDir}/shells/${shellId}`)).isSymbolicLink();
    /** An HTTP request from inside the shell to an address on the internet, with bash alone. */
    const fetchInShell = (shellId: string, port: number) =>
      backend.exec(
        shellId,
        request([
          "bash",
          "-c",
          `exec 3<>/dev/tcp/198.51.100.7/${port} && printf 'GET / HTTP/1.0\\r\\nHost: example.test\\r\\n\\r\\n' >&3 && cat <&3`,
        ]),
      );

    it("serves each internet shell from a forwarded sandbox whose forwarder reaches that shell's own proxy", async () => {
      const first = await fakeProxy(`${stateDir}/p1.sock`, "proxy one");
      const second = await fakeProxy(`${stateDir}/p2.sock`, "proxy two");
      try {
        await backend.create(
          spec("net-one", {
            network: "internet",
            egress: { socketPath: `${stateDir}/p1.sock` },
          }),
        );
        expect(await claimedBox("net-one")).toBe(true);
        const answer = await fetchInShell("net-one", 80);
        expect(answer.stdout, answer.stderr).toContain("via proxy one");
        expect(first.lines).toEqual([
          expect.stringMatching(/^PROXY TCP4 \S+ 198\.51\.100\.7 \d+ 80$/),
        ]);
        // The sandbox's walls came with it: nothing but the proxy's ports leaves.
        expect((await fetchInShell("net-one", 22)).exitCode).not.toBe(0);

        // The refilled sandbox serves the next shell, whose connections reach its own proxy only.
        await backend.warm();
        await backend.create(
          spec("net-two", {
            network: "internet",
            egress: { socketPath: `${stateDir}/p2.sock` },
          }),
        );
        expect(await claimedBox("net-two")).toBe(true);
        expect((await fetchInShell("net-two", 80)).stdout).toContain("via proxy two");
        expect(first.lines).toHaveLength(1);
        expect(second.lines).toHaveLength(1);

        // A shell without a proxy never takes a forwarded sandbox (this pool has none for it).
        await backend.warm();
        await backend.create(spec("plain-one"));
        expect(await claimedBox("plain-one")).toBe(false);
        expect((await fetchInShell("plain-one", 80)).exitCode).not.toBe(0);

        // Restarted, the shell's forwarder dials its proxy's own socket, not the pooled link.
        await backend.stop("net-one");
        await backend.start("net-one");
        expect((await fetchInShell("net-one", 80)).stdout).toContain("via proxy one");
      } finally {
        await first.close();
        await second.close();
      }
    }, 120_000);
  },
);
