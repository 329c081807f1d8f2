import { chown, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { claimJailUid, ensureSeccompProgram, JAIL_UID_BANDS } from "@shells/backend-container";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Jail, STAGE_DIR } from "./internal/jail.js";
import { PythonSnapshots } from "./internal/python-snapshots.js";
import { WorkerProcess } from "./internal/worker-process.js";
import { WasmBackend } from "./wasm-backend.js";

const available =
  (
    await new WasmBackend({ stateDir: "/nonexistent", pool: { python: 0, node: 0 } }).availability()
  )[0]?.available === true;
const describeLive = available ? describe : describe.skip;

describeLive("wasm backend: Python workers start from Pyodide's memory snapshot", () => {
  let stateDir: string;
  let snapshotDir: string;
  let snapshot: string;
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "shells-wasm-pysnap-"));
    snapshotDir = join(stateDir, "pyodide-snapshots");
    const made = await new PythonSnapshots(snapshotDir).ensure();
    if (made === null) throw new Error("no snapshot was made");
    snapshot = made;
  }, 300_000);
  afterAll(async () => {
    for (const worker of workers) await worker.kill();
    await rm(stateDir, { recursive: true, force: true });
  });

  /** A real jailed Python worker (its own uid, the seccomp policy) given `pythonSnapshot`. */
  async function startWorker(name: string, pythonSnapshot: string | null) {
    const workspace = join(stateDir, name);
    await mkdir(workspace, { mode: 0o700 });
    const uid = await claimJailUid(join(stateDir, "uids"), JAIL_UID_BANDS.wasm, workspace);
    await chown(workspace, uid, uid);
    await mkdir(STAGE_DIR, { recursive: true, mode: 0o755 });
    const command = new Jail().command({
      language: "python",
      workspace,
      uid,
      gid: uid,
      cgroupProcs: [],
      seccompProgram: await ensureSeccompProgram(stateDir),
      pythonSnapshot,
    });
    const worker = new WorkerProcess(command, { PATH: "/usr/bin:/bin" });
    workers.push(worker);
    await worker.ready;
    return worker;
  }

  async function run(worker: WorkerProcess, source: string): Promise<string> {
    let out = "";
    const outcome = await worker.exec(
      {
        mode: "code",
        source,
        argv: ["python3"],
        env: { PROBE: "env" },
        cwd: "/workspace",
        stdin: null,
      },
      (_, chunk) => (out += Buffer.from(chunk).toString("utf8")),
      new AbortController().signal,
    );
    expect(outcome).toMatchObject({ kind: "done", exitCode: 0 });
    return out;
  }

  it("makes the snapshot once per Pyodide build and keeps nothing else where workers see it", async () => {
    const before = await stat(snapshot);
    expect(before.size).toBeGreaterThan(1024 * 1024);
    // Another backend on the same state dir reuses the file rather than making it again.
    expect(await new PythonSnapshots(snapshotDir).ensure()).toBe(snapshot);
    expect((await stat(snapshot)).mtimeMs).toBe(before.mtimeMs);
    expect(await readdir(snapshotDir)).toEqual([snapshot.slice(snapshotDir.length + 1)]);
  });

  it("starts a jailed worker from it, with the standard library and the shell's workspace", async () => {
    const worker = await startWorker("from-snapshot", snapshot);
    expect(worker.fromSnapshot).toBe(true);
    const out = await run(
      worker,
      "import json, os, decimal\n" +
        "open('/workspace/f.txt', 'w').write('kept')\n" +
        "print(json.dumps([str(decimal.Decimal('1.5')), os.environ.get('PROBE'), open('/workspace/f.txt').read()]))",
    );
    expect(JSON.parse(out)).toEqual(["1.5", "env", "kept"]);
  }, 120_000);

  it("falls back to a full start-up when the snapshot cannot be loaded", async () => {
    const bogusDir = join(stateDir, "bogus");
    await mkdir(bogusDir, { mode: 0o755 });
    await writeFile(join(bogusDir, "pyodide-bogus.bin"), Buffer.alloc(4096, 7), { mode: 0o644 });
    const worker = await startWorker("bogus-snapshot", join(bogusDir, "pyodide-bogus.bin"));
    expect(worker.fromSnapshot).toBe(false);
    expect(await run(worker, "print(6 * 7)")).toBe("42\n");
  }, 300_000);
});
