#!/usr/bin/env node
// Benchmarks the wasm runtime class next to raw baselines measured in the same run on the same
// machine: a bare `node -e 0` spawn and a bare in-process Pyodide load. Engine numbers come from the
// backend itself (a real jailed worker per shell); API numbers go through a real server.
//
//   node bench/wasm-bench.mjs                  # after `npm run build`
//   BENCH_WASM_ONLY_COLD=1 node bench/wasm-bench.mjs   # baselines and cold Python starts only
//   BENCH_ITERATIONS=20 BENCH_PYTHON_ITERATIONS=5 BENCH_IDLE_WASM_SHELLS=10 \
//     BENCH_SNAPSHOT_ITERATIONS=5 node bench/wasm-bench.mjs
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import ShellsClient from "@l1fe/shells";
import { detectCgroups, ShellCgroup } from "@shells/backend-container";
import { WasmBackend } from "@shells/backend-wasm";
import { loadConfig, startServer } from "@shells/server";
import { log, ms, rawSpawn, summary, timeRuns } from "./lib.mjs";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);
const PYTHON_ITERATIONS = Number(process.env.BENCH_PYTHON_ITERATIONS ?? 5);
const IDLE_SHELLS = Number(process.env.BENCH_IDLE_WASM_SHELLS ?? 10);
const SNAPSHOT_ITERATIONS = Number(process.env.BENCH_SNAPSHOT_ITERATIONS ?? 5);
const RESOURCES = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };
const TOTAL_GIB = 24;

/** PSS of the processes in a wasm shell's worker cgroup, in kB. */
function shellPssKb(host, shellId) {
  const record = JSON.parse(readFileSync(join(stateDir, "shells", shellId, "shell.json"), "utf8"));
  const procs = new ShellCgroup(host, "shells-wasm", record.cgroup).procsFiles[0];
  let total = 0;
  for (const pid of readFileSync(procs, "utf8").split("\n").filter(Boolean)) {
    try {
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

const line = (label, s, extra = "") =>
  log(`${label.padEnd(40)} p50 ${ms(s.p50)}  p99 ${ms(s.p99)}  (n=${s.n})${extra}`);

log(
  `# Shells wasm benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version}`,
);

// --- baselines ----------------------------------------------------------------------------------
const nodeZero = summary(
  Array.from({ length: ITERATIONS }, () => rawSpawn([process.execPath, "-e", "0"])),
);
line("baseline `node -e 0` spawn:", nodeZero);
const pyodideDir = dirname(createRequire(import.meta.url).resolve("pyodide/package.json"));
const { loadPyodide } = await import("pyodide");
const pyodideLoad = summary(await timeRuns(2, () => loadPyodide({ indexURL: `${pyodideDir}/` })));
line("baseline bare loadPyodide():", pyodideLoad);
// The same load from a memory snapshot of it (made here, in-process, with the same options).
const snapshotBytes = (
  await loadPyodide({ indexURL: `${pyodideDir}/`, _makeSnapshot: true })
).makeMemorySnapshot();
const pyodideSnapshotLoad = summary(
  await timeRuns(2, () =>
    loadPyodide({ indexURL: `${pyodideDir}/`, _loadSnapshot: snapshotBytes }),
  ),
);
line("baseline bare loadPyodide() from snapshot:", pyodideSnapshotLoad);
const vsNode = (v) => `  = ${(v / nodeZero.p50).toFixed(3)}× node -e 0`;
const vsPyodide = (v) => `  = ${(v / pyodideLoad.p50).toFixed(4)}× bare Pyodide load`;

// --- the backend --------------------------------------------------------------------------------
const stateDir = mkdtempSync(join(tmpdir(), "shells-wasm-bench-"));
const POOL = { python: 1, node: 2 };
const backend = new WasmBackend({ stateDir, pool: POOL });
const [offered] = await backend.availability();
if (!offered?.available) {
  log(`wasm runtime unavailable on this host: ${offered?.reason}`);
  process.exit(0);
}
const execRequest = (command) => ({
  command,
  env: {},
  cwd: "/workspace",
  stdin: undefined,
  timeoutMs: 30_000,
  maxOutputBytes: 1024 * 1024,
});
const first = { python: ["python3", "-c", "pass"], node: ["node", "-e", "0"] };
let counter = 0;
const created = [];
async function create(language) {
  const shellId = `bench-${process.pid}-${++counter}`;
  await backend.create({
    shellId,
    language,
    runtime: "wasm",
    network: "sealed",
    resources: RESOURCES,
    env: {},
  });
  created.push(shellId);
  return shellId;
}

// A cold Python shell (no pool): create → first exec starts a jailed worker, from the backend's
// Pyodide memory snapshot or with Pyodide's full start-up. The first create of each backend is left
// out (it makes the snapshot).
for (const pythonSnapshot of [true, false]) {
  const coldDir = mkdtempSync(join(tmpdir(), "shells-wasm-bench-cold-"));
  const cold = new WasmBackend({ stateDir: coldDir, pool: { python: 0, node: 0 }, pythonSnapshot });
  const samples = [];
  try {
    for (let i = 0; i <= PYTHON_ITERATIONS; i += 1) {
      const shellId = `bench-cold-${process.pid}-${pythonSnapshot}-${i}`;
      const t0 = performance.now();
      await cold.create({
        shellId,
        language: "python",
        runtime: "wasm",
        network: "sealed",
        resources: RESOURCES,
        env: {},
      });
      const result = await cold.exec(shellId, {
        command: ["python3", "-c", "pass"],
        env: {},
        cwd: "/workspace",
        stdin: undefined,
        timeoutMs: 120_000,
        maxOutputBytes: 1024,
      });
      if (i > 0) samples.push(performance.now() - t0);
      if (result.exitCode !== 0) throw new Error(`cold python exec failed: ${result.stderr}`);
      await cold.destroy(shellId);
    }
  } finally {
    await cold.close();
    rmSync(coldDir, { recursive: true, force: true });
  }
  const c = summary(samples);
  line(
    `python: create→first exec, no pool, ${pythonSnapshot ? "snapshot" : "full load"}:`,
    c,
    vsPyodide(c.p50),
  );
}

if (process.env.BENCH_WASM_ONLY_COLD) {
  await backend.close();
  rmSync(stateDir, { recursive: true, force: true });
  process.exit(0);
}

try {
  let t0 = performance.now();
  await backend.warm(() => undefined);
  log(`pools filled (python 1, node 2) in ${ms(performance.now() - t0)}`);

  for (const [language, n] of [
    ["node", ITERATIONS],
    ["python", PYTHON_ITERATIONS],
  ]) {
    // create → first exec with the pool full, as a shell created on a quiet server finds it; the
    // refill that follows each claim is waited for outside the timing.
    const samples = [];
    for (let i = 0; i < n; i += 1) {
      await backend.warm(() => undefined, [language]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      await backend.warm(() => undefined, [language]);
      t0 = performance.now();
      const id = await create(language);
      const result = await backend.exec(id, execRequest(first[language]));
      samples.push(performance.now() - t0);
      if (result.exitCode !== 0) throw new Error(`${language} first exec failed: ${result.stderr}`);
    }
    const c = summary(samples);
    line(
      `${language}: create→first exec (warm pool):`,
      c,
      language === "node" ? vsNode(c.p50) : vsPyodide(c.p50),
    );

    const id = created[created.length - 1];
    const rtt = summary(
      await timeRuns(ITERATIONS, () => backend.exec(id, execRequest(first[language]))),
    );
    line(`${language}: exec \`${first[language].join(" ")}\`:`, rtt, vsNode(rtt.p50));

    await backend.interpreterTurn(id, { language, code: "x = 41", env: {}, timeoutMs: 5000 });
    const turns = [];
    for (let i = 0; i < ITERATIONS * 5; i += 1) {
      t0 = performance.now();
      const answer = await backend.interpreterTurn(id, {
        language,
        code: "x + 1",
        env: {},
        timeoutMs: 5000,
      });
      turns.push(performance.now() - t0);
      if (answer.value !== 42) throw new Error(`${language} turn answered ${answer.value}`);
    }
    line(`${language}: interpreter turn \`x + 1\`:`, summary(turns), vsNode(summary(turns).p50));
  }

  // Snapshots and restores of a small and a 50 MB workspace, beside the raw `tar` of the same
  // directory (create to a file, extract into an empty one) measured in the same run.
  // A restore or reinstall hands a running shell a warm pooled worker: each is timed with the pool
  // full (the refill is waited for outside the timing), and once cold (pool empty: an interpreter
  // load).
  for (const [language, label, megabytes] of [
    ["node", "small (4 KB)", 0],
    ["node", "50 MB", 50],
    ["python", "small (4 KB)", 0],
  ]) {
    await backend.warm(() => undefined, [language]);
    const id = await create(language);
    const fill =
      megabytes === 0
        ? "require('fs').writeFileSync('small.txt', 'x'.repeat(4096))"
        : `const fs = require('fs'), chunk = 'x'.repeat(1 << 20); for (let i = 0; i < ${megabytes}; i++) fs.writeFileSync('f' + i, chunk);`;
    const filled = await backend.exec(
      id,
      execRequest(
        language === "node"
          ? ["node", "-e", fill]
          : ["python3", "-c", "open('small.txt', 'w').write('x' * 4096)"],
      ),
    );
    if (filled.exitCode !== 0) throw new Error(`filling the workspace failed: ${filled.stderr}`);
    const workspace = join(stateDir, "shells", id, "workspace");
    const scratch = mkdtempSync(join(tmpdir(), "shells-wasm-bench-tar-"));
    const rawCreate = summary(
      Array.from({ length: SNAPSHOT_ITERATIONS }, () =>
        rawSpawn(["tar", "--create", `--file=${scratch}/raw.tar`, "-C", workspace, "."]),
      ),
    );
    const rawExtract = summary(
      Array.from({ length: SNAPSHOT_ITERATIONS }, (_, i) => {
        mkdirSync(`${scratch}/x${i}`);
        return rawSpawn([
          "tar",
          "--extract",
          `--file=${scratch}/raw.tar`,
          "-C",
          `${scratch}/x${i}`,
        ]);
      }),
    );
    rmSync(scratch, { recursive: true, force: true });
    const snap = summary(await timeRuns(SNAPSHOT_ITERATIONS, (i) => backend.snapshot(id, `s${i}`)));
    const restores = [];
    for (let i = 0; i < SNAPSHOT_ITERATIONS; i += 1) {
      await backend.warm(() => undefined, [language]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      await backend.warm(() => undefined, [language]);
      t0 = performance.now();
      await backend.restore(id, `s${i}`);
      restores.push(performance.now() - t0);
    }
    const restore = summary(restores);
    // Cold: the pool is emptied first, so the restore starts an interpreter itself.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await backend.warm(() => undefined, [language]);
    const drained = [];
    // Creates claim every pooled worker; the refill they schedule starts only after 400 ms.
    for (let i = 0; i < POOL[language]; i += 1) drained.push(await create(language));
    t0 = performance.now();
    await backend.restore(id, "s0");
    const cold = performance.now() - t0;
    for (const other of drained) await backend.destroy(other);
    // reinstall_os: the same handover, the workspace's content carried into the pooled worker's
    // directory (renames and a chown to its uid), warm each time, then once with the pool empty.
    const reinstalls = [];
    for (let i = 0; i < SNAPSHOT_ITERATIONS; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      await backend.warm(() => undefined, [language]);
      t0 = performance.now();
      await backend.reinstallOs(id);
      reinstalls.push(performance.now() - t0);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    await backend.warm(() => undefined, [language]);
    const emptied = [];
    for (let i = 0; i < POOL[language]; i += 1) emptied.push(await create(language));
    t0 = performance.now();
    await backend.reinstallOs(id);
    const coldReinstall = performance.now() - t0;
    for (const other of emptied) await backend.destroy(other);
    const of = `${language}, ${label}`;
    line(`baseline raw tar create, ${label}:`, rawCreate);
    line(`wasm snapshot, ${of}:`, snap, `  = ${(snap.p50 / rawCreate.p50).toFixed(2)}× raw tar`);
    line(`baseline raw tar extract, ${label}:`, rawExtract);
    line(
      `wasm restore (warm pool), ${of}:`,
      restore,
      `  = ${(restore.p50 / rawExtract.p50).toFixed(2)}× raw tar`,
    );
    log(`${`wasm restore (pool empty), ${of}:`.padEnd(40)} ${ms(cold)} (n=1)`);
    line(`wasm reinstall_os (warm pool), ${of}:`, summary(reinstalls));
    log(`${`wasm reinstall_os (pool empty), ${of}:`.padEnd(40)} ${ms(coldReinstall)} (n=1)`);
  }

  // Idle shells: the proportional set size (PSS: private pages plus a share of pages mapped by
  // several processes, such as the node binary) of each shell's jailed worker processes, read
  // from its cgroup, so other load on the host does not blur it.
  const host = detectCgroups();
  for (const [language, n] of [
    ["node", IDLE_SHELLS],
    ["python", Math.max(1, Math.ceil(IDLE_SHELLS / 4))],
  ]) {
    const ids = [];
    for (let i = 0; i < n; i += 1) {
      await backend.warm(() => undefined, [language]);
      ids.push(await create(language));
      await backend.exec(ids[i], execRequest(first[language]));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const pss = ids.map((id) => shellPssKb(host, id) / 1024);
    const perShellMb = pss.reduce((a, b) => a + b, 0) / pss.length;
    log(
      `${`${language}: memory per idle shell (PSS):`.padEnd(40)} ${perShellMb.toFixed(1)} MB (n=${n}, min ${Math.min(...pss).toFixed(1)}, max ${Math.max(...pss).toFixed(1)}) ⇒ ~${Math.floor((TOTAL_GIB * 1024) / perShellMb)} idle shells in ${TOTAL_GIB} GiB`,
    );
  }
} finally {
  for (const id of created) await backend.destroy(id).catch(() => undefined);
  await backend.close();
  rmSync(stateDir, { recursive: true, force: true });
}

// --- through the API ----------------------------------------------------------------------------
const dataDir = mkdtempSync(join(tmpdir(), "shells-wasm-bench-api-"));
const server = await startServer(
  loadConfig([
    "--port",
    "0",
    "--data-dir",
    dataDir,
    "--backend",
    "container",
    "--log-level",
    "warn",
  ]),
);
const shells = new ShellsClient({
  baseUrl: server.url,
  token: readFileSync(join(dataDir, "admin-token"), "utf8").trim(),
});
const wasm = server.backends.find((b) => b.name === "wasm");
try {
  await wasm.warm(() => undefined, ["node"]);
  const samples = [];
  let last;
  for (let i = 0; i < ITERATIONS; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    await wasm.warm(() => undefined, ["node"]);
    const t0 = performance.now();
    last = await shells.create({ language: "node", runtime: "wasm" });
    await shells.exec(last.id, { command: ["node", "-e", "0"] });
    samples.push(performance.now() - t0);
  }
  const c = summary(samples);
  line("API node: create→first exec (warm pool):", c, vsNode(c.p50));
  await shells.interpreter(last.id, { language: "node", code: "x = 41" });
  const turns = summary(
    await timeRuns(ITERATIONS * 2, () =>
      shells.interpreter(last.id, { language: "node", code: "x + 1" }),
    ),
  );
  line("API node: interpreter turn `x + 1`:", turns, vsNode(turns.p50));
} finally {
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
}
