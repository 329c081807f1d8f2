#!/usr/bin/env node
// Kills the control plane (SIGKILL) at random points of every lifecycle operation, many times, on
// the container backend (the simulator where this host has none), restarting it on the same data
// dir and database each time, and prints what it checked after every restart and the percentiles of
// restart-to-ready (process spawn to the first 200 of /readyz, which answers only once the
// reconciliation and the recovery of idempotency keys are done), next to a bare `node -e 0`
// measured in the same run.
//
//   node bench/crash-bench.mjs                      # 60 cycles
//   BENCH_CRASH_CYCLES=200 BENCH_CRASH_SEED=7 node bench/crash-bench.mjs
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkContainerHost, ensureImage } from "@shells/backend-container";
import { CRASH_OPERATIONS, runCrashCycles } from "../test/e2e/crash-cycles.mjs";
import { ms, percentile, summary } from "./lib.mjs";

const CYCLES = Number(process.env.BENCH_CRASH_CYCLES ?? 60);
const SEED = process.env.BENCH_CRASH_SEED ? Number(process.env.BENCH_CRASH_SEED) : undefined;
// The base images `npm start` uses (built once, here if missing): no cycle waits for an image build.
const IMAGES =
  process.env.SHELLS_IMAGES_DIR ?? join(process.cwd(), ".shells", "container", "images");

function log(line = "") {
  process.stdout.write(`${line}\n`);
}

const backend =
  process.getuid?.() === 0 && (await checkContainerHost()).available ? "container" : "simulator";
log(
  `# Shells crash bench — ${new Date().toISOString()} — ${CYCLES} cycles on the ${backend} backend, node ${process.version}`,
);
log(`operations cut in turn: ${CRASH_OPERATIONS.join(", ")}`);
if (backend === "container") await ensureImage(IMAGES, "bash");

// Baseline: a bare Node process start, the floor under any restart of the control plane.
const nodeStarts = [];
for (let i = 0; i < 20; i += 1) {
  const t0 = performance.now();
  spawnSync(process.execPath, ["-e", "0"], { stdio: "ignore" });
  nodeStarts.push(performance.now() - t0);
}

const dataDir = mkdtempSync(join(tmpdir(), "shells-crash-bench-"));
let report;
try {
  report = await runCrashCycles({
    cycles: CYCLES,
    backend,
    dataDir,
    imagesDir: IMAGES,
    ...(SEED !== undefined ? { seed: SEED } : {}),
    log: (line) => log(`  ${line}`),
  });
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}

const { checked } = report;
log();
log(`seed ${report.seed}`);
log(
  `cycles: ${checked.cycles}, of which killed with the request unanswered: ${checked.killedMidRequest}`,
);
log(
  `checked after every restart: no idempotency key left pending; the retry of every keyed request (${checked.keyedRetries}) answers neither request_in_progress nor a 5xx, and ${checked.keysAnsweredFirstOutcome} answered before the kill replay the first answer; every cut create plus its retry made exactly one shell (${checked.creates}); no shell stuck in provisioning; every running shell runs a command (${checked.shellsChecked} shell checks); a shell whose wipe or restore was cut starts`,
);
if (backend === "container")
  log(
    `host objects (loop devices, cgroups, processes of the state dir) only for running shells: ${checked.hostChecks} censuses; after the last cycle, every shell deleted and a SIGTERM: nothing left on the host`,
  );
log(`activity chain across every crash: ${checked.chainEvents} events verify`);
const restarts = summary(report.restartToReadyMs.slice(1));
const base = summary(nodeStarts);
log(
  `restart to ready:  p50 ${ms(restarts.p50)}  p90 ${ms(percentile(report.restartToReadyMs.slice(1), 90))}  p99 ${ms(restarts.p99)}  (n=${restarts.n})`,
);
log(`baseline \`node -e 0\`: p50 ${ms(base.p50)}  p99 ${ms(base.p99)}  (n=${base.n})`);
log(`restart to ready p50 is ${(restarts.p50 / base.p50).toFixed(1)}× a bare node start`);
if (report.failures.length > 0) {
  log();
  log(`${report.failures.length} checks FAILED:`);
  for (const failure of report.failures) log(`  ${failure}`);
  process.exitCode = 1;
} else {
  log("every check held");
}
