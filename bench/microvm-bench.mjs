#!/usr/bin/env node
// Benchmarks the microvm runtime class through a real server, next to raw baselines measured in the
// same run on the same machine: a bare QEMU restore of the same saved VM state to the guest agent's
// first answer (no wake-up, no retry), and a bare cold boot of the same kernel and disk.
//
//   node bench/microvm-bench.mjs               # after `npm run build`
//   SHELLS_IMAGES_DIR=… SHELLS_MICROVM_CACHE_DIR=… BENCH_ITERATIONS=20 node bench/microvm-bench.mjs
//
// Without SHELLS_IMAGES_DIR / SHELLS_MICROVM_CACHE_DIR the bash image and its template are made in
// a fresh data dir first (minutes; timed separately, never inside a measurement).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import ShellsClient from "@l1fe/shells";
import { loadConfig, startServer } from "@shells/server";
// The raw baseline starts QEMU exactly as the backend does, from the backend's own machine setup.
import { killAndWait, startVm } from "../packages/backend-microvm/dist/internal/vm.js";
import { MicrovmBackend } from "../packages/backend-microvm/dist/index.js";
import { ensureImage, imagesDirOf } from "../packages/backend-container/dist/index.js";
import { log, ms, summary, timeRuns } from "./lib.mjs";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 10);
const COLD_BOOTS = Number(process.env.BENCH_COLD_BOOTS ?? 3);
const IDLE_MICROVMS = Number(process.env.BENCH_IDLE_MICROVMS ?? 5);
const MEMORY_MB = 512; // the server's default shell memory: the template creates restore
const TOTAL_GIB = 24;

const line = (label, s, extra = "") =>
  log(`${label.padEnd(44)} p50 ${ms(s.p50)}  p99 ${ms(s.p99)}  (n=${s.n})${extra}`);

/** PSS of one process, in kB. */
function pssKb(pid) {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
}

const load = () =>
  `load average ${loadavg()
    .map((v) => v.toFixed(2))
    .join(" ")}`;
log(
  `# Shells microvm benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version} — ${load()}`,
);

const dataDir = mkdtempSync(join(tmpdir(), "shells-microvm-bench-"));
const config = loadConfig(["--port", "0", "--data-dir", dataDir, "--log-level", "warn"]);
const server = await startServer(config);
const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
const shells = new ShellsClient({ baseUrl: server.url, token });
const backend = server.backends.find((b) => b.name === "microvm");
const created = [];
const work = mkdtempSync(join(tmpdir(), "shells-microvm-bench-raw-"));
try {
  const offered = (await shells.runtimes()).find((r) => r.runtime === "microvm");
  if (!offered?.available) {
    log(`microvm runtime unavailable on this host: ${offered?.reason}`);
    process.exit(0);
  }
  log(`runtime: ${offered.reason}`);
  let t0 = performance.now();
  const template = await backend.prepare("bash", MEMORY_MB);
  log(
    `template (bash, ${MEMORY_MB} MiB) ready in ${ms(performance.now() - t0)}; its cold boot took ${template.coldBootMs} ms`,
  );

  // --- raw baselines: the same saved state and kernel, QEMU alone ------------------------------
  const vmConfig = (i, incoming) => {
    const disk = `${work}/disk-${i}.qcow2`;
    execFileSync("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-b",
      template.disk,
      "-F",
      "qcow2",
      disk,
    ]);
    return {
      accel: template.accel,
      vmlinuz: template.vmlinuz,
      initrd: template.initrd,
      memoryMb: template.memoryMb,
      disk,
      agentSocket: `${work}/agent-${i}.sock`,
      consoleLog: null,
      ...(incoming ? { incomingState: template.state } : {}),
    };
  };
  let unanswered = 0;
  const bare = [];
  for (let i = 0; i < ITERATIONS; i += 1) {
    const config = vmConfig(`r${i}`, true);
    t0 = performance.now();
    const vm = await startVm(config, 10_000).catch(() => null);
    if (!vm) {
      unanswered += 1;
      continue;
    }
    bare.push(performance.now() - t0);
    vm.agent.close();
    await killAndWait(vm.pid);
  }
  const bareRestore = summary(bare);
  line(
    "baseline bare QEMU restore → agent answer:",
    bareRestore,
    `  (${unanswered} never answered)`,
  );
  const cold = summary(
    await timeRuns(COLD_BOOTS, async (i) => {
      const vm = await startVm(vmConfig(`c${i}`, false), 180_000);
      vm.agent.close();
      await killAndWait(vm.pid);
    }),
  );
  line("baseline bare QEMU cold boot → agent answer:", cold);
  const vsRestore = (v) => `  = ${(v / bareRestore.p50).toFixed(2)}× bare restore`;

  // --- through the server -----------------------------------------------------------------------
  // Twice: each shell deleted before the next create (the host otherwise idle, as the baselines
  // are), then each kept running, so the later creates share the host's CPU with the earlier
  // guests (an idle guest under emulation still takes timer ticks).
  const createAndExec = async () => {
    const shell = await shells.create({ language: "bash", runtime: "microvm" });
    const result = await shells.exec(shell.id, { command: ["true"] });
    if (result.exitCode !== 0) throw new Error(`first exec failed: ${result.stderr}`);
    return shell.id;
  };
  const alone = [];
  for (let i = 0; i < ITERATIONS; i += 1) {
    const started = performance.now();
    const id = await createAndExec();
    alone.push(performance.now() - started);
    await shells.delete(id);
  }
  const createToExecAlone = summary(alone);
  line(
    "API create→first exec (one at a time):",
    createToExecAlone,
    vsRestore(createToExecAlone.p50),
  );
  const createToExec = summary(
    await timeRuns(ITERATIONS, async () => {
      created.push(await createAndExec());
    }),
  );
  line(
    `API create→first exec (up to ${ITERATIONS - 1} kept):`,
    createToExec,
    vsRestore(createToExec.p50),
  );
  for (const id of created.splice(1)) await shells.delete(id);

  const warm = created[0];
  const rtt = summary(
    await timeRuns(ITERATIONS * 2, () => shells.exec(warm, { command: ["true"] })),
  );
  line("API exec round trip (`true`):", rtt);

  // --- where a create's and an exec's time go: the backend alone (`onStep`, `onExecTiming`) -----
  const steps = new Map();
  const execTimings = [];
  const stepsDir = mkdtempSync(join(tmpdir(), "shells-microvm-bench-steps-"));
  const direct = new MicrovmBackend({
    stateDir: stepsDir,
    cacheDir: config.microvmCacheDir ?? join(dataDir, "microvm", "cache"),
    images: (language) =>
      ensureImage(config.imagesDir ?? imagesDirOf(join(dataDir, "container")), language),
    grownDiskMb: [1024],
    onStep: (_, step, elapsed) => steps.set(step, [...(steps.get(step) ?? []), elapsed]),
    onExecTiming: (_, timing) => execTimings.push(timing),
  });
  const shellSpec = (shellId) => ({
    shellId,
    language: "bash",
    runtime: "microvm",
    network: "sealed",
    resources: { cpu: 1, memoryMb: MEMORY_MB, pids: 256, diskMb: 1024 },
    env: {},
  });
  for (let i = 0; i < ITERATIONS; i += 1) {
    const shellId = `bench-steps-${i}`;
    await direct.create(shellSpec(shellId));
    await direct.destroy(shellId);
  }
  // The same execs as the API round trip above, through the backend alone, the guest agent's
  // timing beside the host's: what the control plane adds, and what the guest spends.
  await direct.create(shellSpec("bench-exec"));
  const execRequest = {
    command: ["true"],
    env: {},
    cwd: "/",
    timeoutMs: 10_000,
    maxOutputBytes: 1 << 20,
  };
  for (let i = 0; i < 3; i += 1) await direct.exec("bench-exec", execRequest);
  execTimings.length = 0;
  const backendRtt = summary(
    await timeRuns(ITERATIONS * 2, () => direct.exec("bench-exec", execRequest)),
  );
  await direct.destroy("bench-exec");
  await direct.close();
  rmSync(stepsDir, { recursive: true, force: true });
  log("backend create, per step (p50):");
  for (const [step, values] of steps) log(`  ${step.padEnd(14)} ${ms(summary(values).p50)}`);
  line("backend exec round trip (`true`):", backendRtt);
  // Means, not medians: the guest's clock ticks in jiffies (4 ms: TCG gives it no usable TSC), so
  // one exec's parts are whole ticks and only their mean over many execs says where time goes.
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  const part = (label, values) => log(`  ${label.padEnd(40)} mean ${ms(mean(values))}`);
  const inGuest = (t) => (t.startUs + t.runUs + t.finishUs) / 1000;
  log("backend exec, where the round trip goes:");
  part(
    "guest: EXEC taken → process started",
    execTimings.map((t) => t.startUs / 1000),
  );
  part(
    "guest: started → reaped",
    execTimings.map((t) => t.runUs / 1000),
  );
  part(
    "guest: reaped → EXIT sent",
    execTimings.map((t) => t.finishUs / 1000),
  );
  part(
    "host write → EXIT read, less the above",
    execTimings.map((t) => t.exitMs - inGuest(t)),
  );

  // --- idle microvms ------------------------------------------------------------------------------
  for (let i = 0; i < IDLE_MICROVMS; i += 1)
    created.push((await shells.create({ language: "bash", runtime: "microvm" })).id);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  let totalKb = 0;
  for (const id of created) {
    const record = JSON.parse(
      readFileSync(join(dataDir, "microvm", "shells", id, "shell.json"), "utf8"),
    );
    totalKb += pssKb(record.pid);
  }
  const perVmMb = totalKb / 1024 / created.length;
  log(
    `host memory per idle microvm (QEMU PSS):      ${perVmMb.toFixed(1)} MB (n=${created.length}, guest memory ${MEMORY_MB} MiB)`,
  );
  log(
    `idle microvms that fit in ${TOTAL_GIB} GiB:             ~${Math.floor((TOTAL_GIB * 1024) / perVmMb)}`,
  );
  log(`# done — ${load()}`);
} finally {
  for (const id of created) await shells.delete(id).catch(() => undefined);
  await server.close();
  rmSync(work, { recursive: true, force: true });
  rmSync(dataDir, { recursive: true, force: true });
}
