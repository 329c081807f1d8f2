import {
  NetworkMode,
  type Language,
  type ResolvedResources,
  type RuntimeClass,
} from "@shells/contract";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  SANDBOX_EGRESS_PORT,
  SandboxError,
  type SandboxBackend,
  type SandboxExecRequest,
  type SandboxSpec,
} from "./backend.js";
import { readTar, writeTar } from "./tar.js";

/** What a conformance run needs: a backend and the class/language it is tested with. */
export interface ConformanceSubject {
  backend: SandboxBackend;
  runtime: RuntimeClass;
  language: Language;
  cleanup?: () => Promise<void>;
}

/**
 * What a backend claims to do, each claim a group of conformance tests. A claimed capability's
 * tests all run; an unclaimed one's are skipped with the capability in the test's name, and where
 * the interface has an entry point for it (spawn, pty, files, snapshots, reinstall, a network
 * mode) the suite checks the backend refuses it with `SandboxError` code `unsupported` instead of
 * half-working.
 */
export interface BackendCapabilities {
  /**
   * Execs run POSIX `sh -c` scripts and coreutils (echo, cat, printenv, pwd, sleep, yes, head, dd,
   * test, mkdir, rm). Most exec and lifecycle tests are written in it.
   */
  posixShell: boolean;
  /** Commands can start processes and the shell's `pids` limit stops a fork bomb (`pids`). */
  pidsLimit: boolean;
  /** A command past the shell's `memoryMb` is killed with `oom` and the shell stays usable. */
  memoryLimit: boolean;
  /** Writes past the shell's `diskMb` fail with ENOSPC and the exec reports `disk`. */
  diskLimit: boolean;
  /** An exec's stdin and output carry arbitrary bytes, not only UTF-8 text. */
  binaryStdin: boolean;
  /** `files`: stat, list, read, write, remove, and tar export and import. */
  files: boolean;
  /** `spawn`: long-lived processes that read stdin and end on EOF or when the sandbox stops. */
  spawn: boolean;
  /** `spawn` on a pseudo-terminal, with resize. */
  pty: boolean;
  /** `snapshot`, `listSnapshots` and `restore`. */
  snapshots: boolean;
  /** `reinstallOs`: the shell sits on a base image that can be replaced under `/workspace`. */
  reinstallOs: boolean;
  /** `usage` reports the CPU time the sandbox's processes use (cgroup counters, not a model). */
  cpuUsage: boolean;
  /** The network modes `create` accepts; every other mode must be refused with `unsupported`. */
  networkModes: readonly NetworkMode[];
  /**
   * `pause` and `resume`: a paused sandbox refuses execs with `paused`, keeps its state, and can
   * be stopped. Left out: not claimed, and the backend must leave `pause` out too.
   */
  pause?: boolean;
  /**
   * `captureFork` and `create` with `from`: a fork starts from its parent's files at the capture
   * and is independent afterwards. Left out: not claimed, and the backend leaves `captureFork` out.
   */
  fork?: boolean;
}

/**
 * Commands for the steps the suite otherwise writes in POSIX sh, for a backend whose execs are
 * not a POSIX shell (interpreters): given them, the state, file and disk tests run without
 * `posixShell`, each step still an exec inside the sandbox.
 */
export interface ConformanceCommands {
  /** Prints a file's content to stdout. */
  cat(path: string): string[];
  /** Writes `text` and a newline to a file, replacing it. */
  write(path: string, text: string): string[];
  /** Exits 0 when the path exists, non-zero when it does not. */
  exists(path: string): string[];
  /**
   * Writes `mb` MiB to a file, ending non-zero on the first error with the error's
   * message (`No space left on device`) on stderr.
   */
  fill(path: string, mb: number): string[];
  /** Removes a file. */
  remove(path: string): string[];
  /** A directory outside `/workspace` the guest can write to and a reinstall drops. */
  scratchDir: string;
  /** Sends an HTTP GET of `path` to the egress proxy's listener at 127.0.0.1:3128. */
  proxyGet(path: string): string[];
}

/** The POSIX sh forms of `ConformanceCommands` (the suite's words and paths need no quoting). */
const POSIX_COMMANDS: ConformanceCommands = {
  cat: (path) => ["cat", path],
  write: (path, text) => ["sh", "-c", `echo ${text} > ${path}`],
  exists: (path) => ["sh", "-c", `test -e ${path}`],
  fill: (path, mb) => ["sh", "-c", `dd if=/dev/zero of=${path} bs=1M count=${mb}`],
  remove: (path) => ["sh", "-c", `rm -f ${path}`],
  scratchDir: "/root",
  proxyGet: (path) => [
    "bash",
    "-c",
    `exec 3<>/dev/tcp/127.0.0.1/${SANDBOX_EGRESS_PORT} && printf 'GET ${path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 10 cat <&3`,
  ],
};

/** A capability that is claimed or not, as named in skipped tests' titles. */
export type BackendCapability = {
  [K in keyof BackendCapabilities]-?: NonNullable<BackendCapabilities[K]> extends boolean
    ? K
    : never;
}[keyof BackendCapabilities];

const RESOURCES: ResolvedResources = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };

let counter = 0;
function uniqueShellId(): string {
  counter += 1;
  return `conf-${process.pid.toString(36)}-${Date.now().toString(36)}-${counter}`;
}

async function expectSandboxError(
  promise: Promise<unknown>,
  code: SandboxError["code"],
): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SandboxError);
  expect((error as SandboxError).code).toBe(code);
}

/**
 * The behaviour every `SandboxBackend` must show, held to the capabilities it claims. Each
 * backend's test file calls this once. Exec tests use plain POSIX sh and coreutils so any Linux
 * image (and the simulator's model) can run them; they need `posixShell`. A backend whose execs
 * are interpreters passes `options.commands` instead, and the state, file, disk and recover tests
 * run their steps with those.
 */
export function describeSandboxBackend(
  label: string,
  capabilities: BackendCapabilities,
  make: () => Promise<ConformanceSubject>,
  options: { commands?: ConformanceCommands } = {},
): void {
  /** How the state, file and disk tests act inside the sandbox, and what they need for it. */
  const steps = options.commands ?? POSIX_COMMANDS;
  const stepsNeed: BackendCapability[] = options.commands ? [] : ["posixShell"];
  /**
   * Registers a test that runs when every capability it needs is claimed, and otherwise shows up
   * as skipped with the missing capabilities in its name.
   */
  function itNeeds(needs: BackendCapability[], name: string, body: () => Promise<void>): void {
    const missing = needs.filter((capability) => !capabilities[capability]);
    if (missing.length === 0) it(name, body);
    else it.skip(`${name} (needs ${missing.join(", ")})`, body);
  }

  describe(`SandboxBackend conformance: ${label}`, () => {
    let subject: ConformanceSubject;
    const created: string[] = [];

    beforeAll(async () => {
      subject = await make();
    });
    afterAll(async () => {
      for (const id of created) await subject.backend.destroy(id).catch(() => undefined);
      await subject.backend.close();
      await subject.cleanup?.();
    });

    async function createShell(overrides: Partial<SandboxSpec> = {}): Promise<string> {
      const shellId = uniqueShellId();
      created.push(shellId);
      const info = await subject.backend.create({
        shellId,
        language: subject.language,
        runtime: subject.runtime,
        network: "sealed",
        resources: RESOURCES,
        env: { SHELL_GREETING: "hello from the spec" },
        ...overrides,
      });
      expect(info).toMatchObject({ shellId, state: "running" });
      return shellId;
    }

    function run(shellId: string, command: string[], extra: Partial<SandboxExecRequest> = {}) {
      return subject.backend.exec(shellId, {
        command,
        env: {},
        cwd: "/workspace",
        stdin: undefined,
        timeoutMs: 20_000,
        maxOutputBytes: 1024 * 1024,
        ...extra,
      });
    }
    const sh = (shellId: string, script: string, extra: Partial<SandboxExecRequest> = {}) =>
      run(shellId, ["sh", "-c", script], extra);

    /** Writes a line to a file by an exec in the sandbox, and checks it worked. */
    async function put(shellId: string, path: string, text: string): Promise<void> {
      expect((await run(shellId, steps.write(path, text))).exitCode).toBe(0);
    }
    const read = async (shellId: string, path: string) =>
      (await run(shellId, steps.cat(path))).stdout;
    const exists = async (shellId: string, path: string) =>
      (await run(shellId, steps.exists(path))).exitCode === 0;

    it("offers the runtime class it is tested with", async () => {
      const offered = await subject.backend.availability();
      expect(offered).toContainEqual(
        expect.objectContaining({ runtime: subject.runtime, available: true }),
      );
    });

    itNeeds(["posixShell"], "runs a command and returns its output and exit code", async () => {
      const id = await createShell();
      const ok = await run(id, ["echo", "hello", "world"]);
      expect(ok).toMatchObject({ exitCode: 0, stdout: "hello world\n", stderr: "" });
      expect(ok.killReason).toBeUndefined();
      expect(ok.durationMs).toBeGreaterThanOrEqual(0);
      const failed = await sh(id, "echo oops >&2; exit 3");
      expect(failed).toMatchObject({ exitCode: 3, stdout: "", stderr: "oops\n" });
    });

    itNeeds(
      ["posixShell"],
      "passes stdin, the shell's env, the exec's env and the working directory",
      async () => {
        const id = await createShell();
        expect((await run(id, ["cat"], { stdin: "piped in" })).stdout).toBe("piped in");
        expect((await run(id, ["printenv", "SHELL_GREETING"])).stdout).toBe(
          "hello from the spec\n",
        );
        const overridden = await run(id, ["printenv", "SHELL_GREETING"], {
          env: { SHELL_GREETING: "exec wins" },
        });
        expect(overridden.stdout).toBe("exec wins\n");
        expect((await run(id, ["pwd"])).stdout).toBe("/workspace\n");
        await sh(id, "mkdir -p /workspace/sub");
        expect((await run(id, ["pwd"], { cwd: "/workspace/sub" })).stdout).toBe("/workspace/sub\n");
      },
    );

    itNeeds(["posixShell"], "streams output to onOutput before the command ends", async () => {
      const id = await createShell();
      const chunks: { text: string; at: number }[] = [];
      const decoder = new TextDecoder();
      const result = await subject.backend.exec(
        id,
        {
          command: ["sh", "-c", "echo first; sleep 0.6; echo second"],
          env: {},
          cwd: "/workspace",
          stdin: undefined,
          timeoutMs: 20_000,
          maxOutputBytes: 1024 * 1024,
        },
        {
          onOutput: (_stream, chunk) =>
            void chunks.push({ text: decoder.decode(chunk), at: Date.now() }),
        },
      );
      const ended = Date.now();
      expect(chunks.map((c) => c.text).join("")).toBe("first\nsecond\n");
      expect(ended - chunks[0]!.at).toBeGreaterThanOrEqual(400);
      expect(result.stdout).toBe("first\nsecond\n");
    });

    itNeeds(["posixShell"], "keeps files written by one exec for the next", async () => {
      const id = await createShell();
      expect((await sh(id, "echo kept > /workspace/note.txt")).exitCode).toBe(0);
      expect((await run(id, ["cat", "/workspace/note.txt"])).stdout).toBe("kept\n");
    });

    itNeeds(
      ["posixShell"],
      "kills a command past its wall clock with killReason wall_clock",
      async () => {
        const id = await createShell();
        const result = await run(id, ["sleep", "30"], { timeoutMs: 300 });
        expect(result.killReason).toBe("wall_clock");
        expect(result.exitCode).not.toBe(0);
        expect(result.durationMs).toBeLessThan(10_000);
      },
    );

    itNeeds(["posixShell"], "cuts output past the limit with killReason output_limit", async () => {
      const id = await createShell();
      const result = await sh(id, "yes | head -c 5000000", { maxOutputBytes: 64 * 1024 });
      expect(result.killReason).toBe("output_limit");
      expect(result.truncated).toBe(true);
      expect(result.stdout.length).toBeLessThanOrEqual(64 * 1024);
      expect(result.stdout.startsWith("y\ny\n")).toBe(true);
    });

    itNeeds(["posixShell", "pidsLimit"], "stops a fork bomb with killReason pids", async () => {
      const id = await createShell();
      const result = await sh(id, "f(){ f|f & }; f; sleep 5", { timeoutMs: 15_000 });
      expect(result.killReason).toBe("pids");
      expect((await run(id, ["echo", "still here"])).stdout).toBe("still here\n");
    });

    itNeeds(
      ["posixShell", "memoryLimit"],
      "ends a memory balloon with killReason oom",
      async () => {
        const id = await createShell({ resources: { ...RESOURCES, memoryMb: 64 } });
        const result = await sh(id, "head -c 1000000000 /dev/zero | tail", { timeoutMs: 15_000 });
        expect(result.killReason).toBe("oom");
        expect((await run(id, ["echo", "still here"])).stdout).toBe("still here\n");
      },
    );

    itNeeds(
      [...stepsNeed, "diskLimit"],
      "fails writes past the disk limit with ENOSPC and killReason disk",
      async () => {
        const id = await createShell({ resources: { ...RESOURCES, diskMb: 32 } });
        const result = await run(id, steps.fill("/workspace/big", 64), { timeoutMs: 15_000 });
        expect(result.exitCode).not.toBe(0);
        expect(result.stderr).toMatch(/No space left on device/);
        expect(result.killReason).toBe("disk");
        expect((await run(id, steps.remove("/workspace/big"))).exitCode).toBe(0);
        expect((await run(id, steps.write("/workspace/after.txt", "freed"))).exitCode).toBe(0);
        expect((await run(id, steps.cat("/workspace/after.txt"))).stdout).toBe("freed\n");
      },
    );

    itNeeds(
      stepsNeed,
      "refuses execs on a stopped sandbox and keeps its state across stop and start",
      async () => {
        const id = await createShell();
        await put(id, "/workspace/state.txt", "survives");
        expect(await subject.backend.stop(id)).toMatchObject({ state: "stopped" });
        await expectSandboxError(run(id, ["true"]), "not_running");
        expect(await subject.backend.stop(id)).toMatchObject({ state: "stopped" });
        expect(await subject.backend.start(id)).toMatchObject({ state: "running" });
        expect(await read(id, "/workspace/state.txt")).toBe("survives\n");
      },
    );

    itNeeds(
      ["posixShell"],
      "ends a running exec with killReason stopped when the sandbox stops",
      async () => {
        const id = await createShell();
        const pending = run(id, ["sleep", "30"]);
        await new Promise((resolve) => setTimeout(resolve, 300));
        await subject.backend.stop(id);
        const result = await pending;
        expect(result.killReason).toBe("stopped");
      },
    );

    itNeeds(
      ["posixShell"],
      "ends a running exec with the reason the stop gives (quota for a project cap)",
      async () => {
        const id = await createShell();
        const pending = run(id, ["sleep", "30"]);
        await new Promise((resolve) => setTimeout(resolve, 300));
        await subject.backend.stop(id, "quota");
        expect((await pending).killReason).toBe("quota");
      },
    );

    it("reports usage while running and none while stopped, if it meters usage", async () => {
      const usage = subject.backend.usage?.bind(subject.backend);
      if (!usage) {
        expect(capabilities.cpuUsage).toBe(false);
        return;
      }
      const id = await createShell();
      const running = await usage(id);
      expect(running).not.toBeNull();
      expect(running?.cpuUsec).toBeGreaterThanOrEqual(0);
      expect(running?.memoryBytes).toBeGreaterThanOrEqual(0);
      await subject.backend.stop(id);
      expect(await usage(id)).toBeNull();
      expect(await usage("conf-never-made")).toBeNull();
    });

    itNeeds(
      ["posixShell", "cpuUsage"],
      "counts the CPU time a busy exec burns in the sandbox's usage",
      async () => {
        const id = await createShell();
        const before = await subject.backend.usage?.(id);
        await sh(id, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done");
        const after = await subject.backend.usage?.(id);
        expect(after?.epoch).toBe(before?.epoch);
        // The loop takes well over 100 ms of CPU on any host; a counter that missed it stays put.
        expect((after?.cpuUsec ?? 0) - (before?.cpuUsec ?? 0)).toBeGreaterThan(100_000);
        expect(after?.memoryBytes).toBeGreaterThan(0);
      },
    );

    itNeeds(stepsNeed, "restart keeps filesystem state", async () => {
      const id = await createShell();
      await put(id, "/workspace/r.txt", "before");
      expect(await subject.backend.restart(id)).toMatchObject({ state: "running" });
      expect(await read(id, "/workspace/r.txt")).toBe("before\n");
    });

    itNeeds(
      [...stepsNeed, "snapshots"],
      "snapshot, change, restore returns the old content",
      async () => {
        const id = await createShell();
        await put(id, "/workspace/doc.txt", "v1");
        const snap = await subject.backend.snapshot(id, "first");
        expect(snap.name).toBe("first");
        await put(id, "/workspace/doc.txt", "v2");
        await put(id, "/workspace/extra.txt", "new");
        await subject.backend.snapshot(id, "second");
        const listed = await subject.backend.listSnapshots(id);
        expect(listed.map((s) => s.name)).toEqual(["second", "first"]);
        expect(await subject.backend.restore(id, "first")).toMatchObject({ name: "first" });
        expect(await read(id, "/workspace/doc.txt")).toBe("v1\n");
        expect(await exists(id, "/workspace/extra.txt")).toBe(false);
        await expectSandboxError(subject.backend.restore(id, "never-made"), "snapshot_not_found");
      },
    );

    itNeeds(
      stepsNeed,
      "wipe_state destroys all filesystem state and leaves a working sandbox",
      async () => {
        const id = await createShell();
        await put(id, "/workspace/w.txt", "gone");
        await put(id, "/tmp/t.txt", "gone");
        await subject.backend.wipeState(id);
        expect(await exists(id, "/workspace/w.txt")).toBe(false);
        expect(await exists(id, "/tmp/t.txt")).toBe(false);
        await put(id, "/workspace/w.txt", "again");
        expect(await read(id, "/workspace/w.txt")).toBe("again\n");
      },
    );

    itNeeds(
      [...stepsNeed, "reinstallOs"],
      "reinstall_os keeps /workspace and drops changes outside it",
      async () => {
        const id = await createShell();
        await put(id, "/workspace/keep.txt", "mine");
        await put(id, `${steps.scratchDir}/junk.txt`, "junk");
        const info = await subject.backend.reinstallOs(id);
        expect(info.state).toBe("running");
        expect(await read(id, "/workspace/keep.txt")).toBe("mine\n");
        expect(await exists(id, `${steps.scratchDir}/junk.txt`)).toBe(false);
      },
    );

    itNeeds(
      ["posixShell", "pause"],
      "pause refuses execs with paused, resume runs them again, and state survives both",
      async () => {
        const id = await createShell();
        await sh(id, "echo kept > /workspace/p.txt");
        const paused = await subject.backend.pause!(id);
        expect(paused.info).toMatchObject({ shellId: id, state: "paused" });
        expect(["freeze", "checkpoint"]).toContain(paused.pause.method);
        await expectSandboxError(run(id, ["true"]), "paused");
        expect((await subject.backend.list()).find((s) => s.shellId === id)?.state).toBe("paused");
        expect(await subject.backend.resume!(id)).toMatchObject({ state: "running" });
        expect((await run(id, ["cat", "/workspace/p.txt"])).stdout).toBe("kept\n");
        // Resuming a running sandbox changes nothing.
        expect(await subject.backend.resume!(id)).toMatchObject({ state: "running" });
      },
    );

    itNeeds(["posixShell", "pause"], "a paused sandbox can be stopped and started", async () => {
      const id = await createShell();
      await sh(id, "echo kept > /workspace/s.txt");
      await subject.backend.pause!(id);
      expect(await subject.backend.stop(id)).toMatchObject({ state: "stopped" });
      expect(await subject.backend.start(id)).toMatchObject({ state: "running" });
      expect((await run(id, ["cat", "/workspace/s.txt"])).stdout).toBe("kept\n");
    });

    itNeeds(
      ["posixShell", "fork"],
      "a fork starts from its parent's files at the capture and is independent afterwards",
      async () => {
        const parent = await createShell();
        await sh(
          parent,
          "echo before > /workspace/f.txt; mkdir -p /workspace/d; echo x > /workspace/d/y",
        );
        const capture = await subject.backend.captureFork!(parent);
        expect(["layered", "layered_reflink", "layered_copy_once", "reflink", "copy"]).toContain(
          capture.method,
        );
        await sh(parent, "echo after > /workspace/f.txt");
        const children: string[] = [];
        try {
          for (let i = 0; i < 2; i++)
            children.push(await createShell({ from: { captureId: capture.captureId } }));
        } finally {
          await subject.backend.releaseFork!(capture.captureId);
        }
        const [a, b] = children as [string, string];
        expect((await run(a, ["cat", "/workspace/f.txt"])).stdout).toBe("before\n");
        expect((await run(a, ["cat", "/workspace/d/y"])).stdout).toBe("x\n");
        await sh(a, "echo mine > /workspace/f.txt; touch /workspace/only-a");
        expect((await run(b, ["cat", "/workspace/f.txt"])).stdout).toBe("before\n");
        expect((await sh(b, "test -e /workspace/only-a")).exitCode).not.toBe(0);
        expect((await run(parent, ["cat", "/workspace/f.txt"])).stdout).toBe("after\n");
        // What the parent wrote, the fork may change.
        expect((await sh(a, "echo z > /workspace/d/y && cat /workspace/d/y")).stdout).toBe("z\n");
      },
    );

    if (!capabilities.fork) {
      it("leaves captureFork out when it does not claim forks", () => {
        expect("captureFork" in subject.backend).toBe(false);
      });
    }

    if (!capabilities.pause) {
      it("leaves pause and resume out when it does not claim them", () => {
        expect("pause" in subject.backend).toBe(false);
        expect("resume" in subject.backend).toBe(false);
      });
    }

    itNeeds(
      stepsNeed,
      "keeps whole sandboxes as they are through recover, if it recovers",
      async () => {
        if (!subject.backend.recover) return;
        const running = await createShell();
        await put(running, "/workspace/kept", "kept");
        const stopped = await createShell();
        await subject.backend.stop(stopped);
        await subject.backend.recover();
        const states = new Map((await subject.backend.list()).map((s) => [s.shellId, s.state]));
        expect(states.get(running)).toBe("running");
        expect(states.get(stopped)).toBe("stopped");
        expect(await read(running, "/workspace/kept")).toBe("kept\n");
      },
    );

    it("destroy reclaims the sandbox and is idempotent", async () => {
      const id = await createShell();
      expect((await subject.backend.list()).map((s) => s.shellId)).toContain(id);
      await subject.backend.destroy(id);
      await subject.backend.destroy(id);
      expect((await subject.backend.list()).map((s) => s.shellId)).not.toContain(id);
      await expectSandboxError(run(id, ["true"]), "not_found");
    });

    itNeeds(
      ["posixShell", "binaryStdin", "files"],
      "passes binary stdin through untouched",
      async () => {
        const id = await createShell();
        const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
        const chunks: Uint8Array[] = [];
        await run(id, ["sh", "-c", "cat > /workspace/raw.bin"], { stdin: bytes });
        const info = await subject.backend.files.stat(id, "/workspace/raw.bin");
        expect(info).toMatchObject({ type: "file", sizeBytes: 256 });
        await subject.backend.exec(
          id,
          {
            command: ["cat", "/workspace/raw.bin"],
            env: {},
            cwd: "/workspace",
            stdin: undefined,
            timeoutMs: 10_000,
            maxOutputBytes: 4096,
          },
          { onOutput: (_s, chunk) => void chunks.push(chunk) },
        );
        expect(Buffer.concat(chunks)).toEqual(Buffer.from(bytes));
      },
    );

    itNeeds(
      [...stepsNeed, "files"],
      "writes, stats, lists, reads and removes files, binary-safe, creating parent directories",
      async () => {
        const id = await createShell();
        const files = subject.backend.files;
        const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
        expect(await files.write(id, "/workspace/deep/er/data.bin", bytes)).toMatchObject({
          type: "file",
          sizeBytes: 300,
        });
        expect(Buffer.from(await files.read(id, "/workspace/deep/er/data.bin", 1024))).toEqual(
          Buffer.from(bytes),
        );
        expect((await files.list(id, "/workspace/deep")).map((f) => [f.path, f.type])).toEqual([
          ["/workspace/deep/er", "directory"],
        ]);
        expect((await run(id, steps.cat("/workspace/deep/er/data.bin"))).exitCode).toBe(0);
        await expect(files.read(id, "/workspace/deep", 1024)).rejects.toMatchObject({
          code: "wrong_file_type",
        });
        await expect(files.read(id, "/workspace/nope.txt", 1024)).rejects.toMatchObject({
          code: "path_not_found",
        });
        // A limit smaller than the error message a missing file gets: still not found, not "too large".
        await expect(files.read(id, "/workspace/nope.txt", 8)).rejects.toMatchObject({
          code: "path_not_found",
        });
        await expect(files.read(id, "/workspace/deep", 8)).rejects.toMatchObject({
          code: "wrong_file_type",
        });
        await expect(files.read(id, "/workspace/deep/er/data.bin", 10)).rejects.toMatchObject({
          details: { tooLarge: true },
        });
        await expect(files.remove(id, "/workspace/deep", false)).rejects.toMatchObject({
          code: "wrong_file_type",
        });
        await files.remove(id, "/workspace/deep", true);
        await expect(files.stat(id, "/workspace/deep")).rejects.toMatchObject({
          code: "path_not_found",
        });
      },
    );

    itNeeds(
      [...stepsNeed, "files"],
      "exports a directory as tar and unpacks a tar into one",
      async () => {
        const id = await createShell();
        const files = subject.backend.files;
        await files.write(id, "/workspace/src/a.txt", new TextEncoder().encode("alpha\n"));
        await files.write(id, "/workspace/src/sub/b.txt", new TextEncoder().encode("beta\n"));
        const names = (await readTar(await files.exportTar(id, "/workspace/src", 1024 * 1024))).map(
          (e) => e.name.replace(/\/$/, ""),
        );
        expect(names).toEqual(expect.arrayContaining(["a.txt", "sub", "sub/b.txt"]));
        const archive = await writeTar([
          { name: "dir", type: "directory", mode: 0o755, linkName: "", data: new Uint8Array(0) },
          {
            name: "dir/c.txt",
            type: "file",
            mode: 0o644,
            linkName: "",
            data: new TextEncoder().encode("gamma\n"),
          },
        ]);
        await files.importTar(id, "/workspace/unpacked", archive);
        expect(await read(id, "/workspace/unpacked/dir/c.txt")).toBe("gamma\n");
      },
    );

    itNeeds(
      ["posixShell", "spawn"],
      "spawns a long-lived process that reads its stdin and ends on EOF",
      async () => {
        const id = await createShell();
        const out: string[] = [];
        const proc = await subject.backend.spawn(
          id,
          { command: ["cat"], env: {}, cwd: "/workspace" },
          { onOutput: (_s, c) => void out.push(new TextDecoder().decode(c)) },
        );
        await proc.write("first line\n");
        await expect.poll(() => out.join(""), { timeout: 5000 }).toBe("first line\n");
        await proc.write(new TextEncoder().encode("second\n"));
        await expect.poll(() => out.join(""), { timeout: 5000 }).toBe("first line\nsecond\n");
        proc.closeStdin();
        expect((await proc.exit).exitCode).toBe(0);
      },
    );

    itNeeds(
      ["posixShell", "spawn", "pty"],
      "runs a login shell on a pty: tty, resize and stty size, exit",
      async () => {
        const id = await createShell();
        let out = "";
        const proc = await subject.backend.spawn(
          id,
          {
            command: ["sh"],
            env: { TERM: "xterm" },
            cwd: "/workspace",
            pty: { cols: 80, rows: 24 },
          },
          { onOutput: (_s, c) => void (out += new TextDecoder().decode(c)) },
        );
        await proc.write("tty\n");
        await expect.poll(() => out, { timeout: 5000 }).toMatch(/\/dev\/pts\/\d+/);
        proc.resize(100, 30);
        await proc.write("stty size\n");
        await expect.poll(() => out, { timeout: 5000 }).toMatch(/30 100/);
        await proc.write("exit\n");
        expect((await proc.exit).exitCode).toBe(0);
      },
    );

    itNeeds(
      ["posixShell", "spawn"],
      "ends spawned processes with killReason stopped when the sandbox stops",
      async () => {
        const id = await createShell();
        const proc = await subject.backend.spawn(
          id,
          { command: ["cat"], env: {}, cwd: "/workspace" },
          { onOutput: () => undefined },
        );
        await subject.backend.stop(id);
        expect((await proc.exit).killReason).toBe("stopped");
      },
    );

    it("answers not_found for a shell it never made", async () => {
      await expectSandboxError(run("conf-never-made", ["true"]), "not_found");
      await expectSandboxError(subject.backend.stop("conf-never-made"), "not_found");
      if (capabilities.snapshots)
        await expectSandboxError(subject.backend.snapshot("conf-never-made", "x"), "not_found");
    });

    // Admission offers `internet` on a backend only when it declares it: the claim and the
    // declaration must agree.
    it("declares internet exactly when it claims it", () => {
      expect(subject.backend.networkModes?.includes("internet") ?? false).toBe(
        capabilities.networkModes.includes("internet"),
      );
    });

    for (const network of NetworkMode.options) {
      if (capabilities.networkModes.includes(network)) {
        it(`creates a running shell in network mode ${network}`, async () => {
          // No proxy listens on this socket: the shell must come up all the same (the control
          // plane restarts a shell's proxy independently of the sandbox).
          await createShell(
            network === "internet"
              ? { network, egress: { socketPath: `/tmp/conformance-egress-${process.pid}.sock` } }
              : { network },
          );
        });
        if (network === "internet") {
          // Service bindings: a shell that is not `internet` may still be given the proxy, and
          // then reaches its listener at 127.0.0.1:SANDBOX_EGRESS_PORT (and nothing else).
          it("routes a sealed shell given an egress proxy to it at 127.0.0.1:3128", async () => {
            const dir = await mkdtemp(join(tmpdir(), "conformance-egress-"));
            const socketPath = join(dir, "proxy.sock");
            const received: Buffer[] = [];
            const proxy = createNetServer((socket) => {
              socket.on("data", (chunk: Buffer) => {
                received.push(chunk);
                socket.end("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
              });
              socket.on("error", () => undefined);
            });
            await new Promise<void>((resolve) => proxy.listen(socketPath, resolve));
            try {
              const id = await createShell({ network: "sealed", egress: { socketPath } });
              const result = await run(id, steps.proxyGet("/hello-proxy"));
              expect(result.exitCode, result.stderr).toBe(0);
              expect(Buffer.concat(received).toString("latin1")).toContain("GET /hello-proxy");
            } finally {
              proxy.close();
              await rm(dir, { recursive: true, force: true });
            }
          });
          it("refuses network mode internet without an egress proxy, with unsupported", async () => {
            const shellId = uniqueShellId();
            created.push(shellId);
            await expectSandboxError(
              subject.backend.create({
                shellId,
                language: subject.language,
                runtime: subject.runtime,
                network,
                resources: RESOURCES,
                env: {},
              }),
              "unsupported",
            );
          });
        }
      } else {
        it(`refuses network mode ${network}, which it does not claim, with unsupported`, async () => {
          const shellId = uniqueShellId();
          created.push(shellId);
          await expectSandboxError(
            subject.backend.create({
              shellId,
              language: subject.language,
              runtime: subject.runtime,
              network,
              resources: RESOURCES,
              env: {},
            }),
            "unsupported",
          );
        });
      }
    }

    // An unclaimed capability that has an entry point must be refused, not half-done.
    if (!capabilities.spawn) {
      it("refuses spawn, which it does not claim, with unsupported", async () => {
        const id = await createShell();
        await expectSandboxError(
          subject.backend.spawn(
            id,
            { command: ["cat"], env: {}, cwd: "/workspace" },
            { onOutput: () => undefined },
          ),
          "unsupported",
        );
      });
    } else if (!capabilities.pty) {
      it("refuses a pty, which it does not claim, with unsupported", async () => {
        const id = await createShell();
        await expectSandboxError(
          subject.backend.spawn(
            id,
            { command: ["sh"], env: {}, cwd: "/workspace", pty: { cols: 80, rows: 24 } },
            { onOutput: () => undefined },
          ),
          "unsupported",
        );
      });
    }
    if (!capabilities.snapshots) {
      it("refuses snapshots, which it does not claim, with unsupported", async () => {
        const id = await createShell();
        await expectSandboxError(subject.backend.snapshot(id, "first"), "unsupported");
        await expectSandboxError(subject.backend.listSnapshots(id), "unsupported");
        await expectSandboxError(subject.backend.restore(id, "first"), "unsupported");
      });
    }
    if (!capabilities.files) {
      it("refuses file operations, which it does not claim, with unsupported", async () => {
        const id = await createShell();
        await expectSandboxError(subject.backend.files.stat(id, "/workspace"), "unsupported");
        await expectSandboxError(
          subject.backend.files.write(id, "/workspace/a.txt", new Uint8Array(1)),
          "unsupported",
        );
      });
    }
    if (!capabilities.reinstallOs) {
      it("refuses reinstall_os, which it does not claim, with unsupported", async () => {
        const id = await createShell();
        await expectSandboxError(subject.backend.reinstallOs(id), "unsupported");
      });
    }
  });
}
