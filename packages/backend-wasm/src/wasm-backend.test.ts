import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTar, writeTar, type SandboxExecRequest } from "@shells/sandbox";
import { describeSandboxBackend, type ConformanceCommands } from "@shells/sandbox/conformance";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WasmBackend } from "./wasm-backend.js";

const probe = new WasmBackend({ stateDir: "/nonexistent", pool: { python: 0, node: 0 } });
const available = (await probe.availability())[0]?.available === true;
const describeLive = available ? describe : describe.skip;

const PROFILE = {
  posixShell: false,
  pidsLimit: false,
  memoryLimit: false,
  diskLimit: true,
  binaryStdin: false,
  files: true,
  spawn: false,
  pty: false,
  snapshots: true,
  reinstallOs: true,
  cpuUsage: true,
  networkModes: ["sealed", "localhost", "internet"],
} as const;

/** The suite's steps as `node -e` programs (QuickJS's `process.argv` is `["node", ...args]`). */
const NODE_COMMANDS: ConformanceCommands = {
  cat: (path) => [
    "node",
    "-e",
    "process.stdout.write(require('fs').readFileSync(process.argv[1]))",
    path,
  ],
  write: (path, text) => [
    "node",
    "-e",
    "require('fs').writeFileSync(process.argv[1], process.argv[2] + '\\n')",
    path,
    text,
  ],
  exists: (path) => [
    "node",
    "-e",
    "process.exit(require('fs').existsSync(process.argv[1]) ? 0 : 1)",
    path,
  ],
  fill: (path, mb) => [
    "node",
    "-e",
    "const fs = require('fs'), chunk = 'x'.repeat(1 << 20); fs.writeFileSync(process.argv[1], ''); for (let i = 0; i < Number(process.argv[2]); i++) fs.appendFileSync(process.argv[1], chunk);",
    path,
    String(mb),
  ],
  remove: (path) => [
    "node",
    "-e",
    "const fs = require('fs'); if (fs.existsSync(process.argv[1])) fs.unlinkSync(process.argv[1]);",
    path,
  ],
  scratchDir: "/tmp",
  proxyGet: (path) => [
    "node",
    "-e",
    "fetch('http://127.0.0.1:3128' + process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1))",
    path,
  ],
};

if (available)
  describeSandboxBackend(
    "wasm (node on QuickJS)",
    PROFILE,
    async () => {
      const stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-conf-"));
      return {
        backend: new WasmBackend({ stateDir, pool: { python: 0, node: 1 } }),
        runtime: "wasm",
        language: "node",
        cleanup: () => rm(stateDir, { recursive: true, force: true }),
      };
    },
    { commands: NODE_COMMANDS },
  );

const RESOURCES = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };

describeLive("wasm backend: execs in a real jailed interpreter", () => {
  let stateDir: string;
  let backend: WasmBackend;
  let counter = 0;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-"));
    backend = new WasmBackend({ stateDir, pool: { python: 1, node: 1 } });
    await backend.warm();
  }, 120_000);
  afterAll(async () => {
    for (const info of await backend.list()) await backend.destroy(info.shellId);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  async function create(
    language: "python" | "node",
    memoryMb = 128,
    network: "sealed" | "localhost" = "sealed",
  ): Promise<string> {
    const shellId = `wasm-${process.pid}-${++counter}`;
    await backend.create({
      shellId,
      language,
      runtime: "wasm",
      network,
      resources: { ...RESOURCES, memoryMb },
      env: { GREETING: "from the shell" },
    });
    return shellId;
  }
  const run = (id: string, command: string[], extra: Partial<SandboxExecRequest> = {}) =>
    backend.exec(id, {
      command,
      env: {},
      cwd: "/workspace",
      stdin: undefined,
      timeoutMs: 20_000,
      maxOutputBytes: 1024 * 1024,
      ...extra,
    });

  it("meters the CPU a busy exec burns from the claim on (not the pool's warm-up) and ends execs with the stop's reason", async () => {
    const id = await create("node");
    const claimed = await backend.usage(id);
    // The pooled worker loaded its interpreter before the shell claimed it: that is not counted.
    expect(claimed?.cpuUsec).toBeLessThan(50_000);
    await run(id, ["node", "-e", "const end = Date.now() + 800; while (Date.now() < end);"]);
    const after = await backend.usage(id);
    expect(after?.epoch).toBe(claimed?.epoch);
    // 800 ms of a busy loop is well over 100 ms of CPU even on a host shared with other work.
    expect((after?.cpuUsec ?? 0) - (claimed?.cpuUsec ?? 0)).toBeGreaterThan(100_000);
    expect(after?.memoryBytes).toBeGreaterThan(0);
    const busy = run(id, ["node", "-e", "while (true);"]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await backend.stop(id, "quota");
    expect(await busy).toMatchObject({ killReason: "quota" });
    expect(await backend.usage(id)).toBeNull();
  }, 60_000);

  it("runs python -c, stdin, env, cwd, argv, exit codes, and keeps files across execs", async () => {
    const id = await create("python");
    expect(await run(id, ["python3", "-c", "print(6*7)"])).toMatchObject({
      exitCode: 0,
      stdout: "42\n",
      stderr: "",
    });
    const io = await run(
      id,
      [
        "python3",
        "-c",
        "import os,sys; print(sys.stdin.read(), os.environ['GREETING'], os.environ['EXTRA'], os.getcwd(), sys.argv[1:])",
        "a",
      ],
      { stdin: "piped", env: { EXTRA: "exec" } },
    );
    expect(io.stdout).toBe("piped from the shell exec /workspace ['a']\n");
    expect((await run(id, ["python3", "-c", "raise SystemExit(3)"])).exitCode).toBe(3);
    const failed = await run(id, ["python3", "-c", "1/0"]);
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toMatch(/ZeroDivisionError/);
    await run(id, [
      "python3",
      "-c",
      "open('/workspace/script.py','w').write('import sys; print(\"file\", sys.argv[1:])')",
    ]);
    expect((await run(id, ["python3", "script.py", "x", "y"])).stdout).toBe("file ['x', 'y']\n");
    await backend.restart(id);
    expect((await run(id, ["python3", "/workspace/script.py"])).stdout).toBe("file []\n");
  }, 60_000);

  it("runs node -e and node FILE with stdin, env, argv and a workspace-only fs", async () => {
    const id = await create("node");
    expect(await run(id, ["node", "-e", "console.log(6*7)"])).toMatchObject({
      exitCode: 0,
      stdout: "42\n",
    });
    const io = await run(
      id,
      [
        "node",
        "-e",
        "const fs=require('fs'); console.log(fs.readFileSync(0), process.env.GREETING, process.argv.slice(1)); fs.writeFileSync('n.js', 'console.log(process.argv.slice(2).join(\"+\"))')",
        "q",
      ],
      { stdin: "in" },
    );
    expect(io.stdout).toBe('in from the shell ["q"]\n');
    expect((await run(id, ["node", "n.js", "a", "b"])).stdout).toBe("a+b\n");
    expect((await run(id, ["node", "-e", "process.exit(5)"])).exitCode).toBe(5);
    const escape = await run(id, ["node", "-e", "require('fs').readFileSync('/etc/passwd')"]);
    expect(escape.exitCode).toBe(1);
    expect(escape.stderr).toMatch(/EACCES/);
  }, 60_000);

  it("runs each node exec in fresh globals on the worker's warm runtime", async () => {
    const id = await create("node");
    expect((await run(id, ["node", "-e", "globalThis.leak = 1; var v = 2"])).exitCode).toBe(0);
    expect(
      (await run(id, ["node", "-e", "console.log(typeof leak, typeof v, typeof __host)"])).stdout,
    ).toBe("undefined undefined undefined\n");
    const drained = await run(id, ["node", "-e", "Promise.resolve(3).then((n) => console.log(n))"]);
    expect(drained.stdout).toBe("3\n");
  }, 60_000);

  const turn = (id: string, language: "python" | "node", code: string, timeoutMs = 10_000) =>
    backend.interpreterTurn(id, { language, code, env: { TURN_ENV: "t" }, timeoutMs });

  it("keeps globals across python turns, apart from execs, with values, output and tracebacks", async () => {
    const id = await create("python");
    expect(await turn(id, "python", "x = 41")).toMatchObject({ value: null, restarted: true });
    expect(await turn(id, "python", "print('seen'); x + 1")).toEqual({
      stdout: "seen\n",
      stderr: "",
      value: 42,
      error: null,
      restarted: false,
    });
    expect((await turn(id, "python", "object()")).value).toMatch(/^<object object at/);
    const failed = await turn(id, "python", "def f():\n    return 1/0\nf()");
    expect(failed.error).toMatchObject({ name: "ZeroDivisionError", message: "division by zero" });
    expect(failed.error?.traceback).toMatch(/Traceback[\s\S]*line 2, in f/);
    // Execs run in fresh globals: they neither see nor disturb the turns' namespace.
    expect((await run(id, ["python3", "-c", "print('x' in globals())"])).stdout).toBe("False\n");
    const slow = await turn(id, "python", "while True: pass", 400);
    expect(slow.error?.name).toBe("TimeoutError");
    expect((await turn(id, "python", "x")).value).toBe(41);
    await expect(turn(id, "node", "1")).rejects.toMatchObject({ code: "unsupported" });
  }, 60_000);

  it("keeps globals across node turns, awaits promises and reports errors with their stack", async () => {
    const id = await create("node");
    expect(await turn(id, "node", "x = 41; let y = 1; const z = 0")).toMatchObject({
      restarted: true,
      error: null,
    });
    expect(await turn(id, "node", "console.log('seen'); x + y + z")).toEqual({
      stdout: "seen\n",
      stderr: "",
      value: 42,
      error: null,
      restarted: false,
    });
    expect((await turn(id, "node", "Promise.resolve({ a: [x] })")).value).toEqual({ a: [41] });
    expect((await turn(id, "node", "process.env.TURN_ENV")).value).toBe("t");
    const failed = await turn(id, "node", "function f() { throw new TypeError('bad') }\nf()");
    expect(failed.error).toMatchObject({ name: "TypeError", message: "bad" });
    expect(failed.error?.traceback).toMatch(/at f \(turn\.js/);
    expect((await run(id, ["node", "-e", "console.log(typeof x)"])).stdout).toBe("undefined\n");
    expect((await turn(id, "node", "for(;;){}", 300)).error?.name).toBe("TimeoutError");
    expect((await turn(id, "node", "x + 1")).value).toBe(42);
  }, 60_000);

  // The suite's file tests verify through a POSIX shell (`cat`), which wasm shells do not have:
  // the same checks, verified through the interpreter instead.
  it("writes, stats, lists, reads and removes files inside the jail, binary-safe", async () => {
    const id = await create("python");
    const files = backend.files;
    const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
    expect(await files.write(id, "/workspace/deep/er/data.bin", bytes)).toMatchObject({
      path: "/workspace/deep/er/data.bin",
      type: "file",
      sizeBytes: 300,
    });
    expect(Buffer.from(await files.read(id, "/workspace/deep/er/data.bin", 1024))).toEqual(
      Buffer.from(bytes),
    );
    expect((await files.list(id, "/workspace/deep")).map((f) => [f.path, f.type])).toEqual([
      ["/workspace/deep/er", "directory"],
    ]);
    const seen = await run(id, [
      "python3",
      "-c",
      "print(list(open('/workspace/deep/er/data.bin','rb').read()[:3]))",
    ]);
    expect(seen.stdout).toBe("[0, 7, 14]\n");
    await files.write(id, "/workspace/run.sh", new TextEncoder().encode("x"), 0o750);
    expect((await files.stat(id, "/workspace/run.sh")).mode).toBe(0o750);
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
    expect((await run(id, ["python3", "-c", "import os; print(os.listdir())"])).stdout).toBe(
      "['run.sh']\n",
    );
  }, 60_000);

  it("exports a directory as tar and unpacks a tar into one", async () => {
    const id = await create("node");
    const files = backend.files;
    await files.write(id, "/workspace/src/a.txt", new TextEncoder().encode("alpha\n"));
    await files.write(id, "/workspace/src/sub/b.txt", new TextEncoder().encode("beta\n"));
    const names = (await readTar(await files.exportTar(id, "/workspace/src", 1024 * 1024))).map(
      (e) => e.name.replace(/\/$/, ""),
    );
    expect(names).toEqual(expect.arrayContaining(["a.txt", "sub", "sub/b.txt"]));
    await expect(files.exportTar(id, "/workspace/src", 600)).rejects.toMatchObject({
      details: { tooLarge: true },
    });
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
    const read = await run(id, [
      "node",
      "-e",
      "console.log(require('fs').readFileSync('/workspace/unpacked/dir/c.txt').trim())",
    ]);
    expect(read.stdout).toBe("gamma\n");
  }, 60_000);

  it("keeps file operations inside the shell: no path or symlink leads out of /workspace and /tmp", async () => {
    const id = await create("node");
    const other = await create("node");
    await backend.files.write(other, "/workspace/theirs.txt", new TextEncoder().encode("b"));
    const files = backend.files;
    const workspace = join(stateDir, "shells", id, "workspace");
    // Links the guest could have made: to the jail's interpreter files, to the root, to a place
    // that does not exist yet, and through a parent directory.
    await symlink("/opt/shells", join(workspace, "jail"));
    await symlink("/", join(workspace, "root"));
    await symlink("/opt/shells/planted.txt", join(workspace, "dangling"));
    await mkdir(join(workspace, "d"));
    await symlink("../../..", join(workspace, "d", "up"));
    const refused = [
      files.read(id, "/etc/passwd", 4096),
      files.read(id, "/workspace/../etc/passwd", 4096),
      files.read(id, "/workspace/root/etc/passwd", 4096),
      files.list(id, "/workspace/jail"),
      files.read(id, "/workspace/jail/worker/interpreter-worker.mjs", 1 << 20),
      files.write(id, "/workspace/dangling", new TextEncoder().encode("x")),
      files.write(id, "/workspace/root/opt/shells/x", new TextEncoder().encode("x")),
      files.list(id, "/workspace/d/up"),
      files.read(id, `/workspace/d/up/shells/${other}/workspace/theirs.txt`, 4096),
      files.exportTar(id, "/workspace/root", 1 << 20),
    ];
    // Settled together: each attempt has its handler before any of them can reject.
    for (const outcome of await Promise.allSettled(refused)) {
      expect(outcome.status).toBe("rejected");
      if (outcome.status === "rejected")
        expect(outcome.reason).toMatchObject({ code: "path_not_found" });
    }
    // A link itself can be looked at and removed; its target is not touched.
    expect(await files.stat(id, "/workspace/root")).toMatchObject({ type: "symlink" });
    await files.remove(id, "/workspace/jail", true);
    await expect(files.stat(id, "/workspace/jail")).rejects.toMatchObject({
      code: "path_not_found",
    });
    const exported = await readTar(await files.exportTar(id, "/workspace", 1 << 20));
    expect(exported.find((e) => e.name === "root")).toMatchObject({
      type: "symlink",
      linkName: "/",
    });
    // An archive whose link leads out is refused before anything is written.
    const escaping = await writeTar([
      { name: "out", type: "symlink", mode: 0o777, linkName: "/etc", data: new Uint8Array(0) },
    ]);
    await expect(files.importTar(id, "/workspace/in", escaping)).rejects.toMatchObject({
      code: "unsupported",
    });
  }, 60_000);

  it("refuses other commands with unsupported, naming what wasm shells accept", async () => {
    const id = await create("python");
    await expect(run(id, ["sh", "-c", "echo hi"])).rejects.toMatchObject({
      code: "unsupported",
      details: { unsupportedCommand: true },
      message: expect.stringMatching(/python3 -c CODE/),
    });
    await expect(run(id, ["node", "-e", "1"])).rejects.toMatchObject({ code: "unsupported" });
  }, 60_000);

  it("ends an endless loop with wall_clock by interrupt and keeps the interpreter", async () => {
    const py = await create("python");
    const looped = await run(py, ["python3", "-c", "while True: pass"], { timeoutMs: 500 });
    expect(looped.killReason).toBe("wall_clock");
    expect(looped.exitCode).not.toBe(0);
    expect(looped.durationMs).toBeLessThan(5000);
    const after = await run(py, ["python3", "-c", "print('still here')"]);
    expect(after.stdout).toBe("still here\n");
    expect(after.durationMs).toBeLessThan(1000); // the same interpreter: no cold start
    const js = await create("node");
    const jsLoop = await run(js, ["node", "-e", "for(;;){}"], { timeoutMs: 300 });
    expect(jsLoop.killReason).toBe("wall_clock");
    expect((await run(js, ["node", "-e", "console.log('ok')"])).stdout).toBe("ok\n");
  }, 60_000);

  it("ends a queued exec past its wall clock without interrupting the one running before it", async () => {
    const id = await create("python");
    // The second exec is asked for only once the first runs: it then waits behind it.
    let started: () => void = () => undefined;
    const running = new Promise<void>((resolve) => (started = resolve));
    const first = backend.exec(
      id,
      {
        command: [
          "python3",
          "-c",
          "import time\nprint('first running', flush=True)\nend = time.time() + 1.5\nwhile time.time() < end: pass\nprint('first done')",
        ],
        env: {},
        cwd: "/workspace",
        stdin: undefined,
        timeoutMs: 20_000,
        maxOutputBytes: 4096,
      },
      { onOutput: () => started() },
    );
    await running;
    const queued = await run(id, ["python3", "-c", "print('never')"], { timeoutMs: 200 });
    expect(queued).toMatchObject({ killReason: "wall_clock", exitCode: 130, stdout: "" });
    expect(await first).toMatchObject({ exitCode: 0, stdout: "first running\nfirst done\n" });
    expect((await first).killReason).toBeUndefined();
  }, 60_000);

  it("interrupts one looping turn after another on the same interpreter and keeps its globals", async () => {
    // Each interrupt must land: one lost while the guest loops would end in the worker's death.
    const id = await create("python");
    expect((await turn(id, "python", "kept = 0")).error).toBeNull();
    for (let i = 1; i <= 20; i += 1) {
      const answer = await turn(id, "python", `kept = ${i}\nwhile True: pass`, 100);
      expect(answer.error).toMatchObject({ name: "TimeoutError", message: /globals are kept/ });
    }
    expect(await turn(id, "python", "kept")).toMatchObject({ value: 20, restarted: false });
  }, 120_000);

  it("keeps the interpreter when an interrupted turn gets no CPU for longer than the grace", async () => {
    const id = await create("python");
    expect((await turn(id, "python", "kept = 'yes'")).error).toBeNull();
    const record = JSON.parse(
      await readFile(join(stateDir, "shells", id, "shell.json"), "utf8"),
    ) as { cgroup: string };
    const { detectCgroups, ShellCgroup } = await import("@shells/backend-container");
    const host = detectCgroups();
    if (typeof host === "string") throw new Error(host);
    const members = await new ShellCgroup(host, "shells-wasm", record.cgroup).members();
    expect(members.length).toBeGreaterThan(0);
    const looping = turn(id, "python", "while True: pass", 300);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Frozen, as a starved host would leave it: the interrupt waits, well past 1.5 s of wall clock.
    for (const pid of members) process.kill(pid, "SIGSTOP");
    await new Promise((resolve) => setTimeout(resolve, 3000));
    for (const pid of members) process.kill(pid, "SIGCONT");
    const answer = await looping;
    expect(answer.error).toMatchObject({ name: "TimeoutError", message: /globals are kept/ });
    expect((await turn(id, "python", "kept")).value).toBe("yes");
  }, 60_000);

  it("cuts output past the limit with output_limit", async () => {
    const id = await create("node");
    const result = await run(id, ["node", "-e", "for(;;) console.log('y')"], {
      maxOutputBytes: 64 * 1024,
    });
    expect(result.killReason).toBe("output_limit");
    expect(result.truncated).toBe(true);
    expect(result.stdout.length).toBeLessThanOrEqual(64 * 1024);
    expect(result.stdout.startsWith("y\ny\n")).toBe(true);
  }, 60_000);

  it("ends a memory balloon with oom from the cgroup, then serves the next exec", async () => {
    const id = await create("node", 32);
    const result = await run(
      id,
      ["node", "-e", "const a=[]; for(;;) a.push('x'.repeat(1<<20) + a.length)"],
      { timeoutMs: 30_000 },
    );
    expect(result.killReason).toBe("oom");
    expect((await run(id, ["node", "-e", "console.log('back')"])).stdout).toBe("back\n");
  }, 90_000);

  it("streams output before the exec ends", async () => {
    const id = await create("python");
    const seen: { text: string; at: number }[] = [];
    const result = await backend.exec(
      id,
      {
        command: [
          "python3",
          "-c",
          "import time; print('first', flush=True); time.sleep(0.6); print('second')",
        ],
        env: {},
        cwd: "/workspace",
        stdin: undefined,
        timeoutMs: 10_000,
        maxOutputBytes: 4096,
      },
      {
        onOutput: (_s, chunk) =>
          void seen.push({ text: Buffer.from(chunk).toString(), at: Date.now() }),
      },
    );
    expect(result.stdout).toBe("first\nsecond\n");
    expect(Date.now() - seen[0]!.at).toBeGreaterThanOrEqual(400);
  }, 60_000);

  it("shows the guest nothing of the host: no host files, no sockets, no server env, no other shell", async () => {
    const a = await create("python");
    // A localhost shell is a sealed one: no socket, not even to its own loopback.
    const b = await create("python", 128, "localhost");
    await run(a, ["python3", "-c", "open('/workspace/secret.txt','w').write('a-only')"]);
    const probe = await run(b, [
      "python3",
      "-c",
      [
        "import os, socket",
        "for p in ['/etc/hostname', '/etc/passwd', '/proc/1/environ']:",
        "    try: open(p).read(); print('READ', p)",
        "    except OSError: print('no', p)",
        "try: socket.create_connection(('127.0.0.1', 22), timeout=2); print('CONNECTED')",
        "except OSError: print('no socket')",
        "try: s = socket.socket(); s.bind(('127.0.0.1', 8000)); s.listen(); print('LISTENING')",
        "except OSError: print('no listening')",
        "print(sorted(os.listdir('/workspace')), 'PATH' in os.environ)",
      ].join("\n"),
    ]);
    expect(probe.stdout).toBe(
      "no /etc/hostname\nno /etc/passwd\nno /proc/1/environ\nno socket\nno listening\n[] False\n",
    );
    // The refusals left the interpreter whole.
    expect((await run(b, ["python3", "-c", "print('still here')"])).stdout).toBe("still here\n");
    expect(await readdir(join(stateDir, "shells", a, "workspace"))).toEqual(["secret.txt"]);
  }, 60_000);

  it("wipe_state empties the workspace and leaves a working shell", async () => {
    const id = await create("node");
    await run(id, ["node", "-e", "require('fs').writeFileSync('w.txt','x')"]);
    await backend.wipeState(id);
    expect(
      (await run(id, ["node", "-e", "console.log(require('fs').existsSync('w.txt'))"])).stdout,
    ).toBe("false\n");
  }, 60_000);
});

describeLive("wasm backend: leftovers of a control plane that died", () => {
  it("removes worker cgroups of its state dir that no shell names, and leaves other dirs' alone", async () => {
    const stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-sweep-"));
    const { detectCgroups, shellCgroupName } = await import("@shells/backend-container");
    const host = detectCgroups();
    if (typeof host === "string")
      throw new Error(`the wasm runtime is available without cgroups: ${host}`);
    const roots =
      host.version === 2
        ? [join(host.root, "shells-wasm")]
        : [host.memory, host.pids, host.cpu].map((root) => join(root, "shells-wasm"));
    const orphan = shellCgroupName(stateDir, "w-deadbeef0001");
    const foreign = shellCgroupName(`${stateDir}-other`, "w-deadbeef0002");
    for (const root of roots)
      for (const name of [orphan, foreign]) await mkdir(join(root, name), { recursive: true });
    const backend = new WasmBackend({ stateDir, pool: { python: 0, node: 0 } });
    try {
      await backend.warm(() => undefined, []);
      for (const root of roots) {
        const left = await readdir(root);
        expect(left).not.toContain(orphan);
        expect(left).toContain(foreign);
      }
    } finally {
      await backend.close();
      for (const root of roots) await rm(join(root, foreign), { recursive: true, force: true });
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
