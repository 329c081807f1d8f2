import { execFile } from "node:child_process";
import { chown, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  claimJailUid,
  detectCgroups,
  ensureSeccompProgram,
  JAIL_UID_BANDS,
  ShellCgroup,
} from "@shells/backend-container";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Jail, STAGE_DIR } from "./internal/jail.js";
import { WasmBackend } from "./wasm-backend.js";

const execFileAsync = promisify(execFile);

const available =
  (
    await new WasmBackend({ stateDir: "/nonexistent", pool: { python: 0, node: 0 } }).availability()
  )[0]?.available === true;
const describeLive = available ? describe : describe.skip;

/** The container backend's probe: tries each system call its seccomp policy refuses. */
const PROBE_SOURCE = fileURLToPath(
  new URL("../../backend-container/native/test-probe.c", import.meta.url),
);

const EPERM = 1;

describeLive("wasm backend: the worker's jail", () => {
  let stateDir: string;
  let registry: string;
  let backend: WasmBackend;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-walls-"));
    registry = join(stateDir, "uids");
    backend = new WasmBackend({ stateDir, uidRegistryDir: registry, pool: { python: 0, node: 1 } });
    await backend.warm(undefined, ["node"]);
  }, 120_000);
  afterAll(async () => {
    for (const info of await backend.list()) await backend.destroy(info.shellId);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it("refuses the system calls of the container sandboxes' seccomp policy to what runs in it", async () => {
    // The jail runs the static probe in place of the worker, as a uid of its own.
    const workspace = join(stateDir, "probe-workspace");
    await mkdir(workspace, { mode: 0o700 });
    const uid = await claimJailUid(registry, JAIL_UID_BANDS.wasm, workspace);
    await execFileAsync("gcc", ["-static", "-Os", "-o", join(workspace, "probe"), PROBE_SOURCE]);
    await chown(workspace, uid, uid);
    await chown(join(workspace, "probe"), uid, uid);
    await mkdir(STAGE_DIR, { recursive: true, mode: 0o755 });
    const [file, ...args] = new Jail().command({
      language: "node",
      workspace,
      uid,
      gid: uid,
      cgroupProcs: [],
      seccompProgram: await ensureSeccompProgram(stateDir),
      program: ["/workspace/probe", "syscalls"],
    }) as [string, ...string[]];
    const { stdout } = await execFileAsync(file, args);
    const refused = Object.fromEntries(
      stdout
        .trim()
        .split("\n")
        .map((line) => line.split(" ") as [string, string])
        .map(([name, errno]) => [name, Number(errno)]),
    );
    // keyctl and a nested user namespace succeed in a bwrap jail without the filter.
    expect(refused).toEqual({
      keyctl: EPERM,
      bpf: EPERM,
      perf_event_open: EPERM,
      userfaultfd: EPERM,
      unshare_user: EPERM,
    });
  }, 120_000);

  it("runs each shell's worker as a uid of its own, which cannot signal another shell's worker, and frees it with the shell", async () => {
    const spec = (shellId: string) => ({
      shellId,
      language: "node" as const,
      runtime: "wasm" as const,
      network: "sealed" as const,
      resources: { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 },
      env: {},
    });
    // The first claims the pooled worker (its uid is handed over), the second starts one cold.
    await backend.create(spec("walls-a"));
    await backend.create(spec("walls-b"));
    const cgroups = detectCgroups();
    if (typeof cgroups === "string") throw new Error(cgroups);
    const worker = async (shellId: string) => {
      const dir = join(stateDir, "shells", shellId);
      const record = JSON.parse(await readFile(join(dir, "shell.json"), "utf8")) as {
        cgroup: string;
        uid: number;
      };
      const pids = await new ShellCgroup(cgroups, "shells-wasm", record.cgroup).members();
      const uids = new Set<number>();
      for (const pid of pids) {
        const status = await readFile(`/proc/${pid}/status`, "utf8");
        uids.add(Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]));
      }
      return { dir, record, pids, uids: [...uids] };
    };
    const a = await worker("walls-a");
    const b = await worker("walls-b");
    for (const shell of [a, b]) {
      // Every process of the worker, from the jail's entry to the interpreter, runs as the shell's uid.
      expect(shell.uids).toEqual([shell.record.uid]);
      expect(shell.record.uid).toBeGreaterThanOrEqual(JAIL_UID_BANDS.wasm.first);
      expect(shell.record.uid).toBeLessThan(JAIL_UID_BANDS.wasm.first + JAIL_UID_BANDS.wasm.count);
      expect((await stat(join(shell.dir, "workspace"))).uid).toBe(shell.record.uid);
      expect(await readFile(join(registry, String(shell.record.uid), "owner"), "utf8")).toBe(
        shell.dir,
      );
    }
    expect(a.record.uid).not.toBe(b.record.uid);

    const signal = (uid: number, pid: number) =>
      execFileAsync("setpriv", [
        `--reuid=${uid}`,
        `--regid=${uid}`,
        "--clear-groups",
        "kill",
        "-0",
        String(pid),
      ]).then(
        () => "delivered",
        (error: { stderr?: string }) => error.stderr ?? "failed",
      );
    // As shell a's uid, nothing reaches shell b's worker; as b's own uid it would.
    expect(await signal(a.record.uid, b.pids[0]!)).toMatch(/Operation not permitted/);
    expect(await signal(b.record.uid, b.pids[0]!)).toBe("delivered");

    await backend.destroy("walls-a");
    await expect(stat(join(registry, String(a.record.uid)))).rejects.toThrow();
    await expect(stat(join(registry, String(b.record.uid)))).resolves.toBeDefined();
  }, 120_000);
});
