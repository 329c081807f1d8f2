import {
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SandboxExecRequest } from "@shells/sandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WasmBackend } from "./wasm-backend.js";

const probe = new WasmBackend({ stateDir: "/nonexistent", pool: { python: 0, node: 0 } });
const available = (await probe.availability())[0]?.available === true;
const describeLive = available ? describe : describe.skip;

const RESOURCES = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };

describeLive("wasm backend: a shell's state (snapshots, restore, reinstall, disk quota)", () => {
  let stateDir: string;
  let backend: WasmBackend;
  let counter = 0;

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-state-"));
    backend = new WasmBackend({ stateDir, pool: { python: 1, node: 1 } });
    await backend.warm();
  }, 120_000);
  afterAll(async () => {
    for (const info of await backend.list()) await backend.destroy(info.shellId);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  async function create(language: "python" | "node", diskMb = 64): Promise<string> {
    const shellId = `state-${process.pid}-${++counter}`;
    await backend.create({
      shellId,
      language,
      runtime: "wasm",
      network: "sealed",
      resources: { ...RESOURCES, diskMb },
      env: {},
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
  const py = (id: string, code: string, extra: Partial<SandboxExecRequest> = {}) =>
    run(id, ["python3", "-c", code], extra);
  const turn = (id: string, code: string) =>
    backend.interpreterTurn(id, { language: "python", code, env: {}, timeoutMs: 20_000 });

  it("snapshots while an exec runs without ending it or the turns' globals, and restores the content", async () => {
    const id = await create("python");
    await py(id, "open('doc.txt','w').write('v1')");
    expect((await turn(id, "x = 41")).error).toBeNull();
    // An exec that writes for a while: the snapshot freezes it mid-run and it carries on after.
    const busy = py(
      id,
      "import time\nfor i in range(30):\n    open('tick.txt','w').write(str(i)); time.sleep(0.05)\nprint('finished')",
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const snap = await backend.snapshot(id, "first");
    expect(snap).toMatchObject({ name: "first" });
    expect(snap.sizeBytes).toBeGreaterThan(0);
    expect(await busy).toMatchObject({ exitCode: 0, stdout: "finished\n" });
    expect((await turn(id, "x + 1")).value).toBe(42);

    await py(id, "open('doc.txt','w').write('v2'); open('extra.txt','w').write('new')");
    await backend.snapshot(id, "second");
    expect((await backend.listSnapshots(id)).map((s) => s.name)).toEqual(["second", "first"]);

    await backend.restore(id, "first");
    const after = await py(
      id,
      "import os; print(open('doc.txt').read(), os.path.exists('extra.txt'), 0 < int(open('tick.txt').read()) < 29)",
    );
    expect(after.stdout).toBe("v1 False True\n");
    // A restore starts a fresh interpreter: the turns' globals are gone.
    expect((await turn(id, "x")).error?.name).toBe("NameError");
    // The restored files belong to the guest: it can change and remove them.
    expect((await py(id, "import os; os.remove('doc.txt'); print('removed')")).stdout).toBe(
      "removed\n",
    );
    await expect(backend.restore(id, "never-made")).rejects.toMatchObject({
      code: "snapshot_not_found",
    });
    await expect(backend.snapshot(id, "../escape")).rejects.toMatchObject({ code: "unsupported" });
  }, 90_000);

  it("re-taking a snapshot's name replaces it, and a stopped shell restores on its next start", async () => {
    const id = await create("node");
    await run(id, ["node", "-e", "require('fs').writeFileSync('n.txt', 'one')"]);
    await backend.snapshot(id, "point");
    await run(id, ["node", "-e", "require('fs').writeFileSync('n.txt', 'two')"]);
    await backend.snapshot(id, "point");
    await run(id, ["node", "-e", "require('fs').writeFileSync('n.txt', 'three')"]);
    expect((await backend.listSnapshots(id)).map((s) => s.name)).toEqual(["point"]);
    expect(await readdir(join(stateDir, "shells", id, "snapshots"))).toHaveLength(2);
    await backend.stop(id);
    await backend.restore(id, "point");
    expect((await backend.list()).find((s) => s.shellId === id)?.state).toBe("stopped");
    await backend.start(id);
    expect(
      (await run(id, ["node", "-e", "console.log(require('fs').readFileSync('n.txt'))"])).stdout,
    ).toBe("two\n");
  }, 60_000);

  const recordOf = async (id: string) =>
    JSON.parse(await readFile(join(stateDir, "shells", id, "shell.json"), "utf8")) as {
      cgroup: string;
      uid: number;
    };

  it("reinstall_os hands the shell a warm pooled interpreter: /workspace stays (its own uid's), /tmp and globals go", async () => {
    await backend.warm(undefined, ["python"]);
    const id = await create("python");
    await py(
      id,
      "import os; os.makedirs('/workspace/sub', exist_ok=True); open('/workspace/sub/deep.txt','w').write('deep'); os.symlink('sub/deep.txt', '/workspace/link'); open('/workspace/keep.txt','w').write('mine'); open('/tmp/junk.txt','w').write('x')",
    );
    await turn(id, "y = 1");
    // The pool holds a warm python worker again before the reinstall.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await backend.warm(undefined, ["python"]);
    const before = await recordOf(id);
    expect(await backend.reinstallOs(id)).toMatchObject({ state: "running" });
    const after = await recordOf(id);
    // The pooled worker's cgroup and uid are the shell's now, and so are its files.
    expect(after.cgroup).not.toBe(before.cgroup);
    expect(after.uid).not.toBe(before.uid);
    const workspace = join(stateDir, "shells", id, "workspace");
    for (const path of ["", "keep.txt", "sub", "sub/deep.txt"])
      expect((await stat(join(workspace, path))).uid, path).toBe(after.uid);
    expect(
      (await py(id, "import os; print(open('link').read(), os.readlink('link'))")).stdout,
    ).toBe("deep sub/deep.txt\n");
    expect(
      (await py(id, "open('/workspace/sub/new.txt','w').write('ok'); print('wrote')")).stdout,
    ).toBe("wrote\n");
    expect(
      (
        await py(
          id,
          "import os; print(open('/workspace/keep.txt').read(), os.path.exists('/tmp/junk.txt'))",
        )
      ).stdout,
    ).toBe("mine False\n");
    const fresh = await turn(id, "y");
    expect(fresh.restarted).toBe(true);
    expect(fresh.error?.name).toBe("NameError");
  }, 60_000);

  it("fails writes past diskMb with ENOSPC and kill reason disk, counts files, and works again after a delete", async () => {
    const id = await create("python", 8);
    const full = await py(id, "open('big','wb').write(b'x' * (12 << 20))");
    expect(full.exitCode).not.toBe(0);
    expect(full.stderr).toMatch(/OSError: \[Errno \d+\] No space left on device/);
    expect(full.killReason).toBe("disk");
    // Many small files fill it as one big one does.
    const many = await py(
      id,
      "import errno\ntry:\n    for i in range(100): open(f'f{i}','wb').write(b'y' * (256 << 10))\nexcept OSError as e:\n    print('stopped at', i, e.errno == errno.ENOSPC)",
    );
    expect(many.stdout).toMatch(/^stopped at \d+ True\n$/);
    expect(many.killReason).toBeUndefined();
    // The files API is held to the same quota (the server answers quota_exceeded).
    await expect(
      backend.files.write(id, "/workspace/upload.bin", new Uint8Array(9 << 20)),
    ).rejects.toMatchObject({ code: "failed", details: { noSpace: true } });
    // /tmp is the jail's memory-backed scratch space, not the shell's disk.
    expect((await py(id, "open('/tmp/t','wb').write(b'z' * (10 << 20)); print('ok')")).stdout).toBe(
      "ok\n",
    );
    const freed = await py(
      id,
      "import os, glob\nfor f in glob.glob('*'): os.remove(f)\nopen('after','wb').write(b'a' * (6 << 20)); print(os.path.getsize('after'))",
    );
    expect(freed).toMatchObject({ exitCode: 0, stdout: `${6 << 20}\n` });
    // The quota holds for a worker started cold on the same state (after a restart), and for the
    // warm pooled worker a restore hands the shell.
    await backend.restart(id);
    expect((await py(id, "open('more','wb').write(b'b' * (4 << 20))")).killReason).toBe("disk");
    await backend.snapshot(id, "six");
    await py(id, "import os; os.remove('after')");
    await backend.restore(id, "six");
    expect((await py(id, "open('more','wb').write(b'b' * (4 << 20))")).killReason).toBe("disk");
    // And the shell's usage is read from the worker it runs in now.
    expect((await backend.usage(id))?.memoryBytes).toBeGreaterThan(0);
  }, 90_000);

  it("recover finishes a reinstall's carry a crash cut, and the next worker owns every file again", async () => {
    const id = await create("node");
    await run(id, [
      "node",
      "-e",
      "require('fs').writeFileSync('a.txt', 'a'); require('fs').writeFileSync('b.txt', 'b')",
    ]);
    await backend.stop(id);
    const dir = join(stateDir, "shells", id);
    // A carry cut halfway: one file moved into the pooled worker's directory (another uid's).
    await mkdir(join(dir, "workspace.carry"));
    await chown(join(dir, "workspace.carry"), 12345, 12345);
    await rename(join(dir, "workspace", "a.txt"), join(dir, "workspace.carry", "a.txt"));
    await backend.recover();
    expect((await readdir(dir)).sort()).toEqual(["shell.json", "workspace"]);
    await backend.start(id);
    const both = await run(id, [
      "node",
      "-e",
      "const fs = require('fs'); fs.appendFileSync('a.txt', '!'); console.log(fs.readFileSync('a.txt') + fs.readFileSync('b.txt'))",
    ]);
    expect(both.stdout).toBe("a!b\n");
    expect((await stat(join(dir, "workspace"))).uid).toBe((await recordOf(id)).uid);
  }, 60_000);

  it("recover finishes a restore a crash cut after its first rename and drops unnamed archives", async () => {
    const id = await create("node");
    await run(id, ["node", "-e", "require('fs').writeFileSync('state.txt', 'snapshotted')"]);
    await backend.snapshot(id, "good");
    await backend.stop(id);
    const dir = join(stateDir, "shells", id);
    // A restore that had unpacked and renamed the old workspace away when the process died.
    await mkdir(join(dir, "workspace.restore"));
    await writeFile(join(dir, "workspace.restore", "state.txt"), "restored");
    await rename(join(dir, "workspace"), join(dir, "workspace.old"));
    // And a snapshot cut before its metadata was written.
    await writeFile(join(dir, "snapshots", "cut.9.tar.tmp"), "partial");
    await writeFile(join(dir, "snapshots", "orphan.8.tar"), "unnamed");
    await backend.recover();
    expect((await readdir(dir)).sort()).toEqual(["shell.json", "snapshots", "workspace"]);
    expect((await readdir(join(dir, "snapshots"))).sort()).toEqual(["good.1.tar", "good.json"]);
    await backend.start(id);
    expect(
      (await run(id, ["node", "-e", "console.log(require('fs').readFileSync('state.txt'))"]))
        .stdout,
    ).toBe("restored\n");
  }, 60_000);
});

describeLive("wasm backend: interpreter turns' idle TTL and lifetime", () => {
  it("drops turn globals after the idle TTL and after the lifetime, and the fresh turn says so", async () => {
    const stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-ttl-"));
    const backend = new WasmBackend({
      stateDir,
      pool: { python: 0, node: 0 },
      // Wide enough that back-to-back turns never idle out on a busy host.
      turnIdleMs: 1500,
      turnLifetimeMs: 4000,
    });
    const turn = (code: string) =>
      backend.interpreterTurn("ttl", { language: "node", code, env: {}, timeoutMs: 10_000 });
    try {
      await backend.create({
        shellId: "ttl",
        language: "node",
        runtime: "wasm",
        network: "sealed",
        resources: RESOURCES,
        env: {},
      });
      expect(await turn("globalThis.x = 1")).toMatchObject({ restarted: true, error: null });
      expect(await turn("x")).toMatchObject({ value: 1, restarted: false });
      await new Promise((resolve) => setTimeout(resolve, 1800));
      expect(await turn("typeof x")).toMatchObject({ value: "undefined", restarted: true });
      // Turns every 100 ms keep it from idling, but not past its lifetime.
      await turn("globalThis.y = 2");
      const answers: { value: unknown; restarted: boolean }[] = [];
      const until = Date.now() + 5000;
      while (Date.now() < until) {
        answers.push(await turn("typeof y"));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(answers[0]).toMatchObject({ value: "number", restarted: false });
      expect(answers.some((a) => a.restarted && a.value === "undefined")).toBe(true);
    } finally {
      await backend.destroy("ttl");
      await backend.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  }, 60_000);
});
