import type { Language, ResolvedResources, RuntimeClass } from "@shells/contract";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
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
 * The behaviour every `SandboxBackend` must show. Each backend's test file calls this once; the
 * commands used are plain POSIX sh and coreutils so any Linux image (and the simulator's model)
 * can run them.
 */
export function describeSandboxBackend(
  label: string,
  make: () => Promise<ConformanceSubject>,
): void {
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

    it("offers the runtime class it is tested with", async () => {
      const offered = await subject.backend.availability();
      expect(offered).toContainEqual(
        expect.objectContaining({ runtime: subject.runtime, available: true }),
      );
    });

    it("runs a command and returns its output and exit code", async () => {
      const id = await createShell();
      const ok = await run(id, ["echo", "hello", "world"]);
      expect(ok).toMatchObject({ exitCode: 0, stdout: "hello world\n", stderr: "" });
      expect(ok.killReason).toBeUndefined();
      expect(ok.durationMs).toBeGreaterThanOrEqual(0);
      const failed = await sh(id, "echo oops >&2; exit 3");
      expect(failed).toMatchObject({ exitCode: 3, stdout: "", stderr: "oops\n" });
    });

    it("passes stdin, the shell's env, the exec's env and the working directory", async () => {
      const id = await createShell();
      expect((await run(id, ["cat"], { stdin: "piped in" })).stdout).toBe("piped in");
      expect((await run(id, ["printenv", "SHELL_GREETING"])).stdout).toBe("hello from the spec\n");
      const overridden = await run(id, ["printenv", "SHELL_GREETING"], {
        env: { SHELL_GREETING: "exec wins" },
      });
      expect(overridden.stdout).toBe("exec wins\n");
      expect((await run(id, ["pwd"])).stdout).toBe("/workspace\n");
      await sh(id, "mkdir -p /workspace/sub");
      expect((await run(id, ["pwd"], { cwd: "/workspace/sub" })).stdout).toBe("/workspace/sub\n");
    });

    it("streams output to onOutput before the command ends", async () => {
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

    it("keeps files written by one exec for the next", async () => {
      const id = await createShell();
      expect((await sh(id, "echo kept > /workspace/note.txt")).exitCode).toBe(0);
      expect((await run(id, ["cat", "/workspace/note.txt"])).stdout).toBe("kept\n");
    });

    it("kills a command past its wall clock with killReason wall_clock", async () => {
      const id = await createShell();
      const result = await run(id, ["sleep", "30"], { timeoutMs: 300 });
      expect(result.killReason).toBe("wall_clock");
      expect(result.exitCode).not.toBe(0);
      expect(result.durationMs).toBeLessThan(10_000);
    });

    it("cuts output past the limit with killReason output_limit", async () => {
      const id = await createShell();
      const result = await sh(id, "yes | head -c 5000000", { maxOutputBytes: 64 * 1024 });
      expect(result.killReason).toBe("output_limit");
      expect(result.truncated).toBe(true);
      expect(result.stdout.length).toBeLessThanOrEqual(64 * 1024);
      expect(result.stdout.startsWith("y\ny\n")).toBe(true);
    });

    it("stops a fork bomb with killReason pids", async () => {
      const id = await createShell();
      const result = await sh(id, "f(){ f|f & }; f; sleep 5", { timeoutMs: 15_000 });
      expect(result.killReason).toBe("pids");
      expect((await run(id, ["echo", "still here"])).stdout).toBe("still here\n");
    });

    it("ends a memory balloon with killReason oom", async () => {
      const id = await createShell({ resources: { ...RESOURCES, memoryMb: 64 } });
      const result = await sh(id, "head -c 1000000000 /dev/zero | tail", { timeoutMs: 15_000 });
      expect(result.killReason).toBe("oom");
      expect((await run(id, ["echo", "still here"])).stdout).toBe("still here\n");
    });

    it("fails writes past the disk limit with ENOSPC and killReason disk", async () => {
      const id = await createShell({ resources: { ...RESOURCES, diskMb: 32 } });
      const result = await sh(id, "dd if=/dev/zero of=/workspace/big bs=1M count=64", {
        timeoutMs: 15_000,
      });
      expect(result.exitCode).not.toBe(0);
      expect(result.stderr).toMatch(/No space left on device/);
      expect(result.killReason).toBe("disk");
      expect((await sh(id, "rm -f /workspace/big && echo freed")).stdout).toBe("freed\n");
    });

    it("refuses execs on a stopped sandbox and keeps its state across stop and start", async () => {
      const id = await createShell();
      await sh(id, "echo survives > /workspace/state.txt");
      expect(await subject.backend.stop(id)).toMatchObject({ state: "stopped" });
      await expectSandboxError(run(id, ["true"]), "not_running");
      expect(await subject.backend.stop(id)).toMatchObject({ state: "stopped" });
      expect(await subject.backend.start(id)).toMatchObject({ state: "running" });
      expect((await run(id, ["cat", "/workspace/state.txt"])).stdout).toBe("survives\n");
    });

    it("ends a running exec with killReason stopped when the sandbox stops", async () => {
      const id = await createShell();
      const pending = run(id, ["sleep", "30"]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await subject.backend.stop(id);
      const result = await pending;
      expect(result.killReason).toBe("stopped");
    });

    it("restart keeps filesystem state", async () => {
      const id = await createShell();
      await sh(id, "echo before > /workspace/r.txt");
      expect(await subject.backend.restart(id)).toMatchObject({ state: "running" });
      expect((await run(id, ["cat", "/workspace/r.txt"])).stdout).toBe("before\n");
    });

    it("snapshot, change, restore returns the old content", async () => {
      const id = await createShell();
      await sh(id, "echo v1 > /workspace/doc.txt");
      const snap = await subject.backend.snapshot(id, "first");
      expect(snap.name).toBe("first");
      await sh(id, "echo v2 > /workspace/doc.txt; echo new > /workspace/extra.txt");
      await subject.backend.snapshot(id, "second");
      const listed = await subject.backend.listSnapshots(id);
      expect(listed.map((s) => s.name)).toEqual(["second", "first"]);
      expect(await subject.backend.restore(id, "first")).toMatchObject({ name: "first" });
      expect((await run(id, ["cat", "/workspace/doc.txt"])).stdout).toBe("v1\n");
      expect((await sh(id, "test -e /workspace/extra.txt")).exitCode).not.toBe(0);
      await expectSandboxError(subject.backend.restore(id, "never-made"), "snapshot_not_found");
    });

    it("wipe_state destroys all filesystem state and leaves a working sandbox", async () => {
      const id = await createShell();
      await sh(id, "echo gone > /workspace/w.txt; echo gone > /tmp/t.txt");
      await subject.backend.wipeState(id);
      expect((await sh(id, "test -e /workspace/w.txt")).exitCode).not.toBe(0);
      expect((await sh(id, "test -e /tmp/t.txt")).exitCode).not.toBe(0);
      expect((await run(id, ["echo", "alive"])).stdout).toBe("alive\n");
      expect((await sh(id, "echo again > /workspace/w.txt && cat /workspace/w.txt")).stdout).toBe(
        "again\n",
      );
    });

    it("reinstall_os keeps /workspace and drops changes outside it", async () => {
      const id = await createShell();
      await sh(id, "echo mine > /workspace/keep.txt; echo junk > /root/junk.txt");
      const info = await subject.backend.reinstallOs(id);
      expect(info.state).toBe("running");
      expect((await run(id, ["cat", "/workspace/keep.txt"])).stdout).toBe("mine\n");
      expect((await sh(id, "test -e /root/junk.txt")).exitCode).not.toBe(0);
    });

    it("destroy reclaims the sandbox and is idempotent", async () => {
      const id = await createShell();
      expect((await subject.backend.list()).map((s) => s.shellId)).toContain(id);
      await subject.backend.destroy(id);
      await subject.backend.destroy(id);
      expect((await subject.backend.list()).map((s) => s.shellId)).not.toContain(id);
      await expectSandboxError(run(id, ["true"]), "not_found");
    });

    it("passes binary stdin through untouched", async () => {
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
    });

    it("writes, stats, lists, reads and removes files, binary-safe, creating parent directories", async () => {
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
      expect((await run(id, ["cat", "/workspace/deep/er/data.bin"])).exitCode).toBe(0);
      await expect(files.read(id, "/workspace/deep", 1024)).rejects.toMatchObject({
        code: "wrong_file_type",
      });
      await expect(files.read(id, "/workspace/nope.txt", 1024)).rejects.toMatchObject({
        code: "path_not_found",
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
    });

    it("exports a directory as tar and unpacks a tar into one", async () => {
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
      expect((await run(id, ["cat", "/workspace/unpacked/dir/c.txt"])).stdout).toBe("gamma\n");
    });

    it("spawns a long-lived process that reads its stdin and ends on EOF", async () => {
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
    });

    it("runs a login shell on a pty: tty, resize and stty size, exit", async () => {
      const id = await createShell();
      let out = "";
      const proc = await subject.backend.spawn(
        id,
        { command: ["sh"], env: { TERM: "xterm" }, cwd: "/workspace", pty: { cols: 80, rows: 24 } },
        { onOutput: (_s, c) => void (out += new TextDecoder().decode(c)) },
      );
      await proc.write("tty\n");
      await expect.poll(() => out, { timeout: 5000 }).toMatch(/\/dev\/pts\/\d+/);
      proc.resize(100, 30);
      await proc.write("stty size\n");
      await expect.poll(() => out, { timeout: 5000 }).toMatch(/30 100/);
      await proc.write("exit\n");
      expect((await proc.exit).exitCode).toBe(0);
    });

    it("ends spawned processes with killReason stopped when the sandbox stops", async () => {
      const id = await createShell();
      const proc = await subject.backend.spawn(
        id,
        { command: ["cat"], env: {}, cwd: "/workspace" },
        { onOutput: () => undefined },
      );
      await subject.backend.stop(id);
      expect((await proc.exit).killReason).toBe("stopped");
    });

    it("answers not_found for a shell it never made", async () => {
      await expectSandboxError(run("conf-never-made", ["true"]), "not_found");
      await expectSandboxError(subject.backend.snapshot("conf-never-made", "x"), "not_found");
    });

    it("refuses the internet network mode until the egress proxy exists", async () => {
      const shellId = uniqueShellId();
      created.push(shellId);
      await expectSandboxError(
        subject.backend.create({
          shellId,
          language: subject.language,
          runtime: subject.runtime,
          network: "internet",
          resources: RESOURCES,
          env: {},
        }),
        "unsupported",
      );
    });
  });
}
