#!/usr/bin/env node
// Benchmarks the container runtime through the real API, next to the raw baseline measured in the
// same run on the same machine: a bare `bwrap … true` spawn. Results are reported as percentiles and
// as ratios to that baseline.
//
//   npm run bench                       # defaults
//   BENCH_IDLE_SHELLS=500 npm run bench # how many idle shells to hold at once
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ShellsClient from "@l1fe/shells";
import { loadConfig, startServer } from "@shells/server";
import { ms, summary, timeRuns } from "./stats.mjs";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 40);
const IDLE_SHELLS = Number(process.env.BENCH_IDLE_SHELLS ?? 200);
const THROUGHPUT_SECONDS = Number(process.env.BENCH_THROUGHPUT_SECONDS ?? 5);
const BACKEND = process.env.BENCH_BACKEND ?? "container";

function log(line = "") {
  process.stdout.write(`${line}\n`);
}

function memAvailableKb() {
  const line = readFileSync("/proc/meminfo", "utf8")
    .split("\n")
    .find((l) => l.startsWith("MemAvailable:"));
  return Number(line?.split(/\s+/)[1] ?? 0);
}

function rawSpawn(argv) {
  const t0 = performance.now();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: "ignore" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status}`);
  return performance.now() - t0;
}

log(
  `# Shells container benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version}`,
);

// --- baselines ----------------------------------------------------------------------------------
const bare = summary(Array.from({ length: ITERATIONS }, () => rawSpawn(["true"])));
const bwrapArgv = [
  "bwrap",
  "--ro-bind",
  "/",
  "/",
  "--dev",
  "/dev",
  "--proc",
  "/proc",
  "--unshare-all",
  "--die-with-parent",
  "true",
];
const bwrap = summary(Array.from({ length: ITERATIONS }, () => rawSpawn(bwrapArgv)));
log(`baseline bare \`true\` spawn:        p50 ${ms(bare.p50)}  p99 ${ms(bare.p99)}  (n=${bare.n})`);
log(
  `baseline raw \`bwrap … true\` spawn: p50 ${ms(bwrap.p50)}  p99 ${ms(bwrap.p99)}  (n=${bwrap.n})`,
);
const ratio = (v) => `${(v / bwrap.p50).toFixed(2)}× raw bwrap`;

// --- server -------------------------------------------------------------------------------------
const dataDir = mkdtempSync(join(tmpdir(), "shells-bench-"));
const config = loadConfig([
  "--port",
  "0",
  "--data-dir",
  dataDir,
  "--backend",
  BACKEND,
  "--log-level",
  "warn",
]);
const server = await startServer(config);
const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
const shells = new ShellsClient({ baseUrl: server.url, token });
const created = [];
try {
  let t0 = performance.now();
  const warm = await shells.create({ language: "bash" });
  created.push(warm.id);
  await shells.exec(warm.id, { command: ["true"] });
  log(
    `first create (includes building/caching the bash image when absent): ${ms(performance.now() - t0)}`,
  );

  // create → first exec
  const createToExec = await timeRuns(ITERATIONS, async () => {
    const shell = await shells.create({ language: "bash" });
    await shells.exec(shell.id, { command: ["true"] });
    created.push(shell.id);
  });
  const c = summary(createToExec);
  log(
    `API create→first exec:             p50 ${ms(c.p50)}  p99 ${ms(c.p99)}  (n=${c.n})  p50 = ${ratio(c.p50)}`,
  );
  for (const id of created.splice(1)) await shells.delete(id);

  // exec round trip
  const rtt = summary(
    await timeRuns(ITERATIONS * 5, () => shells.exec(warm.id, { command: ["true"] })),
  );
  log(
    `API exec round trip:               p50 ${ms(rtt.p50)}  p99 ${ms(rtt.p99)}  (n=${rtt.n})  p50 = ${ratio(rtt.p50)}`,
  );

  // throughput with concurrent clients
  for (const clients of [2, 8]) {
    let count = 0;
    const deadline = performance.now() + THROUGHPUT_SECONDS * 1000;
    t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < deadline) {
          await shells.exec(warm.id, { command: ["true"] });
          count += 1;
        }
      }),
    );
    const perSecond = count / ((performance.now() - t0) / 1000);
    log(
      `execs per second, ${clients} clients:      ${perSecond.toFixed(1)}  (raw bwrap spawns/s on one core: ${(1000 / bwrap.p50).toFixed(1)})`,
    );
  }

  // idle shells
  const before = memAvailableKb();
  t0 = performance.now();
  let failures = 0;
  for (let i = 0; i < IDLE_SHELLS; i += 1) {
    try {
      created.push((await shells.create({ language: "bash" })).id);
    } catch (error) {
      failures += 1;
      if (failures === 1)
        log(`  first failure at shell ${i}: ${error.code ?? ""} ${error.message}`);
    }
  }
  await new Promise((r) => setTimeout(r, 1000));
  const usedKb = before - memAvailableKb();
  const idle = created.length - 1;
  log(
    `idle shells held at once:          ${idle} of ${IDLE_SHELLS} (${failures} failed) in ${ms(performance.now() - t0)}`,
  );
  log(
    `host memory per idle shell:        ${(usedKb / 1024 / Math.max(1, idle)).toFixed(2)} MB  (MemAvailable drop ${(usedKb / 1024).toFixed(1)} MB / ${idle})`,
  );
  const stillAnswers = await shells.exec(warm.id, { command: ["echo", "ok"] });
  log(
    `exec with ${idle} idle shells around:  ${stillAnswers.stdout.trim()} in ${ms(stillAnswers.durationMs)}`,
  );
} finally {
  for (const id of created) await shells.delete(id).catch(() => undefined);
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
}
