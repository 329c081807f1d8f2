#!/usr/bin/env node
// Density of idle container shells: how many the host holds, the memory each idle one costs, and the
// exec latency at that density — next to the raw baselines of the same run (a bare `bwrap … true`
// spawn, and the exec latency with a single shell on the host). Drives the container backend directly
// (no control plane, so no admission budget stops it early); needs root.
//
//   node bench/density-bench.mjs                        # 2000 shells, or fewer under memory pressure
//   BENCH_DENSITY_SHELLS=200 node bench/density-bench.mjs
//   BENCH_DENSITY_MIN_FREE_MB=2048 …                    # stop once MemAvailable falls below this
//   BENCH_DENSITY_EXECS=200 …                           # execs timed at full density
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkContainerHost, ContainerBackend, ensureImage } from "@shells/backend-container";
import { log, meminfoKb, ms, rawBwrap, summary, timeRuns } from "./lib.mjs";

const SHELLS = Number(process.env.BENCH_DENSITY_SHELLS ?? 2000);
const EXECS = Number(process.env.BENCH_DENSITY_EXECS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_DENSITY_CONCURRENCY ?? 4);
const IMAGES_DIR = process.env.SHELLS_IMAGES_DIR ?? "/var/cache/shells-test/images";

// Memory pressure: stop before the host has less than this available (default a tenth of its
// memory, at least 1 GiB).
const MIN_FREE_KB =
  Number(process.env.BENCH_DENSITY_MIN_FREE_MB ?? 0) * 1024 ||
  Math.max(1024 * 1024, meminfoKb("MemTotal") / 10);

const host = await checkContainerHost();
if (!host.available) {
  log(`density bench skipped: ${host.reason}`);
  process.exit(0);
}
log(
  `# Shells container density benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version}`,
);
const bwrap = rawBwrap(20);
log(`baseline raw \`bwrap … true\` spawn: p50 ${ms(bwrap.p50)}  p99 ${ms(bwrap.p99)}`);

await ensureImage(IMAGES_DIR, "bash");
const stateDir = mkdtempSync(join(tmpdir(), "shells-density-"));
const backend = new ContainerBackend({ stateDir, imagesDir: IMAGES_DIR });
const spec = (shellId) => ({
  shellId,
  language: "bash",
  runtime: "container",
  network: "sealed",
  resources: { cpu: 1, memoryMb: 256, pids: 128, diskMb: 64 },
  env: {},
});
const exec = (shellId) =>
  backend.exec(shellId, {
    command: ["true"],
    env: {},
    cwd: "/workspace",
    stdin: undefined,
    timeoutMs: 30_000,
    maxOutputBytes: 4096,
  });
const ids = [];
try {
  await backend.create(spec("d-0"));
  ids.push("d-0");
  await exec("d-0");
  const alone = summary(await timeRuns(EXECS, () => exec("d-0")));
  log(`exec with 1 shell on the host:     p50 ${ms(alone.p50)}  p99 ${ms(alone.p99)}`);

  const availableBefore = meminfoKb("MemAvailable");
  const t0 = performance.now();
  let stopReason = `reached ${SHELLS}`;
  let next = 1;
  const creates = [];
  while (next < SHELLS) {
    if (meminfoKb("MemAvailable") < MIN_FREE_KB) {
      stopReason = `memory pressure (MemAvailable under ${(MIN_FREE_KB / 1024).toFixed(0)} MiB)`;
      break;
    }
    const batch = Array.from({ length: Math.min(CONCURRENCY, SHELLS - next) }, () => `d-${next++}`);
    const results = await Promise.allSettled(
      batch.map(async (id) => {
        const started = performance.now();
        await backend.create(spec(id));
        creates.push(performance.now() - started);
        ids.push(id);
      }),
    );
    const failure = results.find((r) => r.status === "rejected");
    if (failure) {
      stopReason = `a create failed: ${failure.reason?.message ?? failure.reason}`;
      break;
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const usedKb = availableBefore - meminfoKb("MemAvailable");
  const idle = ids.length - 1;
  const c = summary(creates);
  log(
    `idle shells held:                  ${ids.length} (stopped: ${stopReason}) in ${ms(performance.now() - t0)}; create p50 ${ms(c.p50)} p99 ${ms(c.p99)} at ${CONCURRENCY} at once`,
  );
  log(
    `host memory per idle shell:        ${(usedKb / 1024 / Math.max(1, idle)).toFixed(2)} MiB  (MemAvailable drop ${(usedKb / 1024).toFixed(0)} MiB / ${idle})`,
  );
  let turn = 0;
  const dense = summary(await timeRuns(EXECS, () => exec(ids[turn++ % ids.length])));
  log(
    `exec at ${ids.length} shells (round robin): p50 ${ms(dense.p50)}  p99 ${ms(dense.p99)}  p50 = ${(dense.p50 / alone.p50).toFixed(2)}× alone, ${(dense.p50 / bwrap.p50).toFixed(2)}× raw bwrap`,
  );
} finally {
  const pending = [...ids];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let id = pending.pop(); id !== undefined; id = pending.pop())
        await backend.destroy(id).catch(() => undefined);
    }),
  );
  rmSync(stateDir, { recursive: true, force: true });
}
