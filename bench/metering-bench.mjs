#!/usr/bin/env node
// Benchmarks metering's overhead, each number beside its baseline measured in the same run on the
// same machine: the control plane's idle CPU and exec latency with metering's checkpoints off, at
// the default interval and at a tenfold one, over 1,000 running simulator shells; then exec latency
// of real container shells with and without metering, beside a raw `bwrap … true` spawn.
//
//   node bench/metering-bench.mjs                      # after `npm run build`
//   BENCH_METERING_SHELLS=1000 BENCH_METERING_WINDOW_SECONDS=10 BENCH_METERING_CONTAINER_SHELLS=20 \
//     node bench/metering-bench.mjs
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import ShellsClient from "@l1fe/shells";
import { ContainerBackend } from "@shells/backend-container";
import { SimulatorBackend } from "@shells/sandbox";
import {
  bootstrapLocalOrg,
  buildApp,
  createLogger,
  loadConfig,
  openSqliteStore,
} from "@shells/server";
import { log, ms, rawBwrap, rawSpawn, summary, timeRuns } from "./lib.mjs";

const SHELLS = Number(process.env.BENCH_METERING_SHELLS ?? 1000);
const WINDOW_SECONDS = Number(process.env.BENCH_METERING_WINDOW_SECONDS ?? 10);
const EXECS = Number(process.env.BENCH_METERING_EXECS ?? 300);
const CONTAINER_SHELLS = Number(process.env.BENCH_METERING_CONTAINER_SHELLS ?? 20);
const CONTAINER_EXECS = Number(process.env.BENCH_METERING_CONTAINER_EXECS ?? 100);
const DEFAULT_INTERVAL_MS = loadConfig([]).meteringCheckpointSeconds * 1000;
/** Checkpoint intervals compared: off (the baseline), the default, and ten times as often. */
const MODES = [
  { label: "metering off", intervalMs: 0 },
  { label: `every ${DEFAULT_INTERVAL_MS} ms (default)`, intervalMs: DEFAULT_INTERVAL_MS },
  { label: `every ${DEFAULT_INTERVAL_MS / 10} ms`, intervalMs: DEFAULT_INTERVAL_MS / 10 },
];

const sleep = (msToWait) => new Promise((resolve) => setTimeout(resolve, msToWait));

/** A control plane over `dataDir` and `backends`, listening on loopback, with its metering interval. */
async function serve(dataDir, backends, meteringIntervalMs) {
  const loaded = loadConfig(["--port", "0", "--data-dir", dataDir, "--log-level", "warn"]);
  // Simulated shells hold no memory: their limits must not fill this host's admission budget.
  const simulated = backends.every((backend) => backend instanceof SimulatorBackend);
  const config = simulated ? { ...loaded, memoryOvercommit: 0 } : loaded;
  const store = await openSqliteStore(join(dataDir, "shells.db"));
  await bootstrapLocalOrg(store.db, dataDir);
  const app = await buildApp(config, {
    store,
    backends,
    logger: createLogger("warn"),
    meteringIntervalMs,
  });
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  return {
    client: new ShellsClient({ baseUrl: url, token }),
    close: async () => {
      await app.close();
      await store.close();
    },
  };
}

/** This process's CPU time (user + system) over `seconds` of idling, in ms per second. */
async function idleCpuPerSecond(seconds) {
  const before = process.cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / ((performance.now() - t0) / 1000);
}

/** Runs `fn` while recording event-loop delay; answers its p50 and p99 in ms. */
async function withLoopDelay(fn) {
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  histogram.enable();
  const result = await fn();
  histogram.disable();
  return {
    result,
    p50: histogram.percentile(50) / 1e6,
    p99: histogram.percentile(99) / 1e6,
  };
}

log(
  `# Shells metering benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version}`,
);

// --- baselines ----------------------------------------------------------------------------------
const bare = summary(Array.from({ length: 40 }, () => rawSpawn(["true"])));
log(
  `baseline bare \`true\` spawn:              p50 ${ms(bare.p50)}  p99 ${ms(bare.p99)}  (n=${bare.n})`,
);

// --- 1,000 simulator shells ---------------------------------------------------------------------
log();
log(`## ${SHELLS} running simulator shells, one control plane per checkpoint interval`);
const simDir = mkdtempSync(join(tmpdir(), "shells-bench-metering-"));
const simulator = new SimulatorBackend();
try {
  let server = await serve(simDir, [simulator], 0);
  const t0 = performance.now();
  const ids = [];
  for (let i = 0; i < SHELLS; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(8, SHELLS - i) }, () =>
        server.client.create({ language: "bash" }),
      ),
    );
    ids.push(...batch.map((s) => s.id));
  }
  log(`created ${ids.length} shells in ${ms(performance.now() - t0)}`);
  await server.close();

  const rows = [];
  for (const mode of MODES) {
    // The same store and the same (in-process) sandboxes: a restart continues every shell's meter.
    server = await serve(simDir, [simulator], mode.intervalMs);
    await sleep(1000);
    const idle = await withLoopDelay(() => idleCpuPerSecond(WINDOW_SECONDS));
    const target = ids[0];
    const exec = summary(
      await timeRuns(EXECS, () => server.client.exec(target, { command: ["true"] })),
    );
    const report = summary(
      await timeRuns(10, () => server.client.usage.report({ groupBy: ["shell"], limit: 10_000 })),
    );
    rows.push({ mode, cpu: idle.result, loop: idle, exec, report });
    await server.close();
  }
  const [off] = rows;
  log();
  log(
    "interval                    idle CPU ms/s  metering CPU ms/s  per checkpoint  loop delay p99  exec p50 / p99 (× off)          usage by shell p50",
  );
  for (const row of rows) {
    const metering = row.cpu - off.cpu;
    const perCheckpoint =
      row.mode.intervalMs > 0 ? `${(metering * (row.mode.intervalMs / 1000)).toFixed(1)} ms` : "-";
    log(
      `${row.mode.label.padEnd(28)}${row.cpu.toFixed(2).padStart(13)}  ${(row === off ? "baseline" : metering.toFixed(2)).padStart(17)}  ${perCheckpoint.padStart(14)}  ${ms(row.loop.p99).padStart(14)}  ${ms(row.exec.p50)} / ${ms(row.exec.p99)} (${(row.exec.p50 / off.exec.p50).toFixed(2)}× / ${(row.exec.p99 / off.exec.p99).toFixed(2)}×)  ${ms(row.report.p50)}`,
    );
  }
  // The tenfold interval gives the clearest signal over the idle noise: its extra CPU per second
  // times its interval is what one checkpoint of every shell costs.
  const [, byDefault, often] = rows;
  const perCheckpointMs = (often.cpu - off.cpu) * (often.mode.intervalMs / 1000);
  log();
  log(
    `one checkpoint of ${SHELLS} running shells: ${perCheckpointMs.toFixed(1)} ms CPU (from the ${often.mode.label} run); at the default interval that is ${(perCheckpointMs / (DEFAULT_INTERVAL_MS / 1000)).toFixed(2)} ms CPU per second = ${(perCheckpointMs / (DEFAULT_INTERVAL_MS / 1000) / 10).toFixed(2)} % of one core (measured directly at the default: ${(byDefault.cpu - off.cpu).toFixed(2)} ms/s, beside ${off.cpu.toFixed(2)} ms/s idle without metering)`,
  );
} finally {
  rmSync(simDir, { recursive: true, force: true });
}

// --- real container shells ------------------------------------------------------------------------
log();
log(`## exec latency of container shells with ${CONTAINER_SHELLS} running around it`);
const probe = new ContainerBackend({ stateDir: join(tmpdir(), "shells-bench-probe") });
const offered = (await probe.availability()).find((a) => a.runtime === "container");
if (CONTAINER_SHELLS === 0 || !offered?.available) {
  log(`skipped: ${CONTAINER_SHELLS === 0 ? "BENCH_METERING_CONTAINER_SHELLS=0" : offered?.reason}`);
} else {
  const bwrap = rawBwrap(40);
  log(
    `baseline raw \`bwrap … true\` spawn:       p50 ${ms(bwrap.p50)}  p99 ${ms(bwrap.p99)}  (n=${bwrap.n})`,
  );
  const dir = mkdtempSync(join(tmpdir(), "shells-bench-metering-c-"));
  const shared = "/var/cache/shells-test/images";
  const imagesDir = process.env.SHELLS_IMAGES_DIR ?? (existsSync(shared) ? shared : undefined);
  const container = new ContainerBackend({
    stateDir: join(dir, "container"),
    ...(imagesDir ? { imagesDir } : {}),
  });
  const ids = [];
  try {
    let server = await serve(dir, [container], 0);
    for (let i = 0; i <= CONTAINER_SHELLS; i += 1)
      ids.push((await server.client.create({ language: "bash" })).id);
    const results = [];
    for (const mode of MODES.slice(0, 2)) {
      if (results.length > 0) server = await serve(dir, [container], mode.intervalMs);
      await sleep(Math.max(1000, mode.intervalMs));
      const exec = summary(
        await timeRuns(CONTAINER_EXECS, () => server.client.exec(ids[0], { command: ["true"] })),
      );
      const cpu = await idleCpuPerSecond(Math.min(WINDOW_SECONDS, 6));
      results.push({ mode, exec, cpu });
      await server.close();
    }
    const [off] = results;
    for (const row of results)
      log(
        `${row.mode.label.padEnd(28)} exec p50 ${ms(row.exec.p50)}  p99 ${ms(row.exec.p99)}  (n=${row.exec.n})  p50 = ${(row.exec.p50 / bwrap.p50).toFixed(2)}× raw bwrap, ${(row.exec.p50 / off.exec.p50).toFixed(2)}× metering off; idle CPU ${row.cpu.toFixed(2)} ms/s`,
      );
  } finally {
    for (const id of ids) await container.destroy(id).catch(() => undefined);
    await container.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
