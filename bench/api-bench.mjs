#!/usr/bin/env node
// Benchmarks the API's and the CLI's own cost, each beside its baseline in the same run on the same
// machine:
// - an authenticated `GET /api/v1/shells/:id` against `GET /healthz` (no auth, no store), in
//   requests per second over keep-alive connections: target at least 50 % of `/healthz`;
// - a 50-item list (`GET /api/v1/shells?limit=50`) with 1,000 shells in the org: target p99 at most
//   20 ms (beside `/healthz`'s own p99 on the same connection);
// - `shells --version` against `node -e 0`: target at most twice as long.
// The server runs in a child process (the built `apps/server/dist/server.js`, simulator backend)
// with metering, `/metrics` and per-key rate limiting on, so the load generator here does not share
// its event loop. The load generator is a loop of keep-alive requests with a fixed number in flight
// (no load-testing package is installed; this keeps the measuring side small and known).
//
//   node bench/api-bench.mjs                       # after `npm run build`
//   BENCH_API_SECONDS=5 BENCH_API_CONCURRENCY=16 BENCH_API_SHELLS=1000 node bench/api-bench.mjs
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { log, ms, rawSpawn, summary } from "./lib.mjs";

const SECONDS = Number(process.env.BENCH_API_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_API_CONCURRENCY ?? 16);
const SHELLS = Number(process.env.BENCH_API_SHELLS ?? 1000);
const LIST_SAMPLES = Number(process.env.BENCH_API_LIST_SAMPLES ?? 500);
const CLI_RUNS = Number(process.env.BENCH_API_CLI_RUNS ?? 15);

const root = fileURLToPath(new URL("..", import.meta.url));
const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
const sleep = (msToWait) => new Promise((resolve) => setTimeout(resolve, msToWait));

/** One request over the keep-alive agent; resolves with the status once the body is read. */
function call(base, method, path, { token, body } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      `${base}${path}`,
      {
        method,
        agent,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { "content-type": "application/json" } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** Requests completed with CONCURRENCY in flight for `seconds`, and the seconds it took. */
async function load(base, path, token, seconds) {
  const until = performance.now() + seconds * 1000;
  let done = 0;
  const worker = async () => {
    while (performance.now() < until) {
      const res = await call(base, "GET", path, { token });
      if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}: ${res.body}`);
      done += 1;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { done, seconds: (performance.now() - t0) / 1000 };
}

/** CPU time (user + system) the process `pid` has used, ms; null where /proc is not there. */
function cpuMsOf(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    // utime and stime, in clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

/**
 * Requests per second of each target, measured in alternating half-second rounds over SECONDS
 * each (after a warm-up), so both see the same machine load; and the server's CPU time per
 * request (`pid`'s), which other work on the machine disturbs far less than throughput.
 */
async function throughputs(base, pid, targets) {
  for (const { path, token } of targets) await load(base, path, token, 0.5);
  const totals = targets.map(() => ({ done: 0, seconds: 0, cpuMs: 0 }));
  for (let round = 0; round < SECONDS * 2; round += 1) {
    for (const [i, { path, token }] of targets.entries()) {
      const cpuBefore = cpuMsOf(pid);
      const { done, seconds } = await load(base, path, token, 0.5);
      const cpuAfter = cpuMsOf(pid);
      totals[i].done += done;
      totals[i].seconds += seconds;
      if (cpuBefore !== null && cpuAfter !== null) totals[i].cpuMs += cpuAfter - cpuBefore;
    }
  }
  return totals.map((t) => ({
    perSecond: t.done / t.seconds,
    cpuMicrosPerRequest: (t.cpuMs * 1000) / t.done,
  }));
}

/** Latencies (ms) of `n` sequential GETs of `path`. */
async function latencies(base, path, token, n) {
  const out = [];
  for (let i = 0; i < n; i += 1) {
    const t0 = performance.now();
    const res = await call(base, "GET", path, { token });
    out.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}`);
  }
  return out;
}

/** The built server in a child process over a fresh data dir; resolves once it answers. */
async function startServer(dataDir) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(
    process.execPath,
    [join(root, "apps/server/dist/server.js"), "--backend", "simulator", "--port", String(port)],
    {
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        ...process.env,
        SHELLS_DATA_DIR: dataDir,
        SHELLS_HOST: "127.0.0.1",
        SHELLS_LOG_LEVEL: "warn",
        SHELLS_METRICS_TOKEN: "bench-metrics-token-0123456789",
        // On, but never reached by the bench's own requests.
        SHELLS_RATE_LIMIT_PER_KEY: "100000000",
      },
    },
  );
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i += 1) {
    try {
      if ((await call(base, "GET", "/healthz")).status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  return { base, token, child };
}

function median(values) {
  return summary(values).p50;
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), "shells-api-bench-"));
  const { base, token, child } = await startServer(dataDir);
  const verdicts = [];
  try {
    const created = await call(base, "POST", "/api/v1/shells", {
      token,
      body: { language: "bash" },
    });
    if (created.status !== 201) throw new Error(`create answered ${created.status}`);
    const shellId = JSON.parse(created.body.toString()).id;

    log(
      `API throughput (${CONCURRENCY} in flight, ${SECONDS} s each in alternating rounds, keep-alive):`,
    );
    const [healthz, getShell] = await throughputs(base, child.pid, [
      { path: "/healthz" },
      { path: `/api/v1/shells/${shellId}`, token },
    ]);
    const share = getShell.perSecond / healthz.perSecond;
    const cpu = (t) => `server CPU ${t.cpuMicrosPerRequest.toFixed(0)} µs/request`;
    log(
      `  GET /healthz (baseline)          ${healthz.perSecond.toFixed(0)} req/s, ${cpu(healthz)}`,
    );
    log(
      `  GET /api/v1/shells/:id (auth)    ${getShell.perSecond.toFixed(0)} req/s = ${(share * 100).toFixed(0)} % of /healthz (target >= 50 %), ${cpu(getShell)}`,
    );
    verdicts.push(["authenticated GET >= 50 % of /healthz", share >= 0.5]);

    for (let made = 1; made < SHELLS; made += CONCURRENCY) {
      await Promise.all(
        Array.from({ length: Math.min(CONCURRENCY, SHELLS - made) }, () =>
          call(base, "POST", "/api/v1/shells", { token, body: { language: "bash" } }),
        ),
      );
    }
    log(`List of 50 with ${SHELLS} shells in the org (${LIST_SAMPLES} sequential requests):`);
    await latencies(base, "/api/v1/shells?limit=50", token, 20);
    const list = summary(await latencies(base, "/api/v1/shells?limit=50", token, LIST_SAMPLES));
    const health = summary(await latencies(base, "/healthz", undefined, LIST_SAMPLES));
    log(`  GET /healthz (baseline)          p50 ${ms(health.p50)}  p99 ${ms(health.p99)}`);
    log(
      `  GET /api/v1/shells?limit=50      p50 ${ms(list.p50)}  p99 ${ms(list.p99)} (target p99 <= 20 ms)`,
    );
    verdicts.push(["list-50 p99 <= 20 ms", list.p99 <= 20]);
  } finally {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    agent.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }

  const cli = join(root, "apps/cli/bin/shells.js");
  const version = spawnSync(process.execPath, [cli, "--version"], { encoding: "utf8" });
  if (version.status !== 0) throw new Error(`shells --version exited ${version.status}`);
  const node = [];
  const shells = [];
  // Interleaved, so both see the same machine load.
  for (let i = 0; i < CLI_RUNS; i += 1) {
    node.push(rawSpawn([process.execPath, "-e", "0"]));
    shells.push(rawSpawn([process.execPath, cli, "--version"]));
  }
  const ratio = median(shells) / median(node);
  log(`CLI start (${CLI_RUNS} runs each, medians):`);
  log(`  node -e 0 (baseline)             ${ms(median(node))}`);
  log(
    `  shells --version                 ${ms(median(shells))} = ${ratio.toFixed(2)}x (target <= 2x)`,
  );
  verdicts.push(["shells --version <= 2x node -e 0", ratio <= 2]);

  log("Targets:");
  for (const [label, met] of verdicts) log(`  ${met ? "met   " : "MISSED"} ${label}`);
}

await main();
