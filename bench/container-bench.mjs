#!/usr/bin/env node
// Benchmarks the container runtime through the real API, next to the raw baseline measured in the
// same run on the same machine: a bare `bwrap … true` spawn. Results are reported as percentiles and
// as ratios to that baseline.
//
//   npm run bench                       # defaults
//   BENCH_IDLE_SHELLS=500 npm run bench # how many idle shells to hold at once
//   BENCH_FORK_MB=500 BENCH_FORK_COUNT=10 npm run bench   # the fork's workspace size and fan-out
//   BENCH_BURST=100 npm run bench       # concurrent creates in the burst
//   BENCH_SECTIONS=fork node bench/container-bench.mjs   # only some sections (create, burst, exec,
//                                       # throughput, pause, fork, idle; default all)
// The server runs with the configuration's defaults (SHELLS_MAX_PROVISIONING, SHELLS_MEMORY_OVERCOMMIT…)
// from the environment; a host with little memory refuses idle shells past its budget, and says so.
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ShellsClient from "@l1fe/shells";
import { ContainerBackend } from "@shells/backend-container";
import { loadConfig, startServer } from "@shells/server";
import {
  log,
  meminfoKb,
  ms,
  pairedWithRawBwrap,
  RAW_BWRAP_ARGV,
  rawBwrap,
  rawSpawn,
  summary,
  timeRuns,
} from "./lib.mjs";

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 40);
const IDLE_SHELLS = Number(process.env.BENCH_IDLE_SHELLS ?? 200);
const THROUGHPUT_SECONDS = Number(process.env.BENCH_THROUGHPUT_SECONDS ?? 5);
const BACKEND = process.env.BENCH_BACKEND ?? "container";
const FORK_MB = Number(process.env.BENCH_FORK_MB ?? 500);
const FORK_COUNT = Number(process.env.BENCH_FORK_COUNT ?? 10);
const PAUSE_ROUNDS = Number(process.env.BENCH_PAUSE_ROUNDS ?? 20);
const BURST = Number(process.env.BENCH_BURST ?? 100);
const SECTIONS = new Set(
  (process.env.BENCH_SECTIONS ?? "create,burst,exec,throughput,pause,fork,idle").split(","),
);
const want = (section) => SECTIONS.has(section);

function statfsFreeBytes(path) {
  const fs = statfsSync(path);
  return fs.bavail * fs.bsize;
}

log(
  `# Shells container benchmark — ${new Date().toISOString()} — ${process.arch}, node ${process.version}`,
);

// --- baselines ----------------------------------------------------------------------------------
const bare = summary(Array.from({ length: ITERATIONS }, () => rawSpawn(["true"])));
const bwrap = rawBwrap(ITERATIONS);
log(`baseline bare \`true\` spawn:        p50 ${ms(bare.p50)}  p99 ${ms(bare.p99)}  (n=${bare.n})`);
log(
  `baseline raw \`bwrap … true\` spawn: p50 ${ms(bwrap.p50)}  p99 ${ms(bwrap.p99)}  (n=${bwrap.n})`,
);
const ratio = (v) => `${(v / bwrap.p50).toFixed(2)}× raw bwrap`;

/**
 * Raw freezer baseline: a cgroup of our own holding one `sleep`, frozen and thawed directly through
 * the kernel's files (v1 freezer hierarchy, or v2 `cgroup.freeze`), timed until the kernel reports
 * the state. Null where this host has neither.
 */
async function rawFreezeBaseline(rounds) {
  const v1 = "/sys/fs/cgroup/freezer";
  const v2 = "/sys/fs/cgroup";
  const version = existsSync(`${v1}/cgroup.procs`)
    ? 1
    : existsSync(`${v2}/cgroup.controllers`)
      ? 2
      : null;
  if (version === null) return null;
  const dir = `${version === 1 ? v1 : v2}/shells-bench-${process.pid}`;
  mkdirSync(dir);
  const sleeper = spawn("sleep", ["600"], { stdio: "ignore" });
  try {
    writeFileSync(`${dir}/cgroup.procs`, String(sleeper.pid));
    const stateFile = version === 1 ? `${dir}/freezer.state` : `${dir}/cgroup.freeze`;
    const frozen = () =>
      version === 1
        ? readFileSync(stateFile, "utf8").trim() === "FROZEN"
        : /^frozen 1$/m.test(readFileSync(`${dir}/cgroup.events`, "utf8"));
    const freezes = [];
    const thaws = [];
    for (let i = 0; i < rounds; i += 1) {
      let t0 = performance.now();
      writeFileSync(stateFile, version === 1 ? "FROZEN" : "1");
      while (!frozen()) await new Promise((r) => setImmediate(r));
      freezes.push(performance.now() - t0);
      t0 = performance.now();
      writeFileSync(stateFile, version === 1 ? "THAWED" : "0");
      while (frozen()) await new Promise((r) => setImmediate(r));
      thaws.push(performance.now() - t0);
    }
    return { freeze: summary(freezes), thaw: summary(thaws) };
  } finally {
    sleeper.kill("SIGKILL");
    await new Promise((r) => sleeper.once("exit", r));
    rmdirSync(dir);
  }
}

/** Raw burst baseline: `count` `bwrap … true` spawned at once; each one's time to exit, ms. */
async function rawBurst(argv, count) {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise((resolve, reject) => {
          const t0 = performance.now();
          const child = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
          child.once("error", reject);
          child.once("exit", (code) =>
            code === 0 ? resolve(performance.now() - t0) : reject(new Error(`exit ${code}`)),
          );
        }),
    ),
  );
}

/**
 * Raw copy baselines on `dir`'s filesystem: `cp -a --reflink=never` of a directory of `mb` MiB of
 * random data (a data copy: coreutils' `cp` reflinks by itself where it can), and
 * `cp --reflink=always` of its file (`reflink` is null where the filesystem has no reflinks).
 */
function rawCopyBaseline(dir, mb) {
  const source = join(dir, "copy-source");
  mkdirSync(source);
  spawnSync("sh", ["-c", `head -c ${mb * 1024 * 1024} /dev/urandom > ${source}/data && sync`]);
  const times = [];
  for (let i = 0; i < 3; i += 1) {
    const target = join(dir, `copy-${i}`);
    const t0 = performance.now();
    const r = spawnSync("cp", ["-a", "--reflink=never", source, target]);
    times.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`cp failed: ${r.stderr}`);
    rmSync(target, { recursive: true });
  }
  const reflinks = [];
  for (let i = 0; i < 3; i += 1) {
    const target = join(dir, `copy-reflink-${i}`);
    const t0 = performance.now();
    const r = spawnSync("cp", ["--reflink=always", `${source}/data`, target]);
    const elapsed = performance.now() - t0;
    rmSync(target, { force: true });
    if (r.status !== 0) break;
    reflinks.push(elapsed);
  }
  rmSync(source, { recursive: true });
  return {
    copy: summary(times),
    reflinks: reflinks.length > 0,
    reflink: reflinks.length > 0 ? summary(reflinks) : null,
  };
}

/** Bytes in use on the filesystem holding `path` (shared reflinked blocks count once). */
function statfsUsedBytes(path) {
  const fs = statfsSync(path);
  return (fs.blocks - fs.bfree) * fs.bsize;
}

/**
 * A scratch XFS filesystem with reflinks (`mkfs.xfs -m reflink=1`) in a sparse image of `sizeMb`
 * MiB under `dir`, loop-mounted: `{ mountPoint, remove }`, or why this host cannot make one.
 */
function mountScratchXfs(dir, sizeMb) {
  const root = mkdtempSync(join(dir, "xfs-"));
  const image = join(root, "xfs.img");
  const mountPoint = join(root, "mnt");
  mkdirSync(mountPoint);
  let mounted = false;
  const remove = async () => {
    // The shells' loop devices on files in it detach a moment after their last unmount.
    for (let tries = 0; mounted && tries < 50; tries += 1) {
      mounted = spawnSync("umount", [mountPoint]).status !== 0;
      if (mounted) await new Promise((r) => setTimeout(r, 100));
    }
    if (mounted) spawnSync("umount", ["-l", mountPoint]);
    mounted = false;
    rmSync(root, { recursive: true, force: true });
  };
  spawnSync("truncate", ["-s", `${sizeMb}M`, image]);
  const made = spawnSync("mkfs.xfs", ["-q", "-m", "reflink=1", image], { encoding: "utf8" });
  if (made.status !== 0) {
    rmSync(root, { recursive: true, force: true });
    return made.error?.code === "ENOENT"
      ? "mkfs.xfs is missing (install xfsprogs)"
      : `mkfs.xfs failed: ${made.stderr.trim()}`;
  }
  const mount = spawnSync("mount", ["-o", "loop", image, mountPoint], { encoding: "utf8" });
  if (mount.status !== 0) {
    rmSync(root, { recursive: true, force: true });
    return `loop-mounting an XFS image failed: ${mount.stderr.trim()}`;
  }
  mounted = true;
  return { mountPoint, remove };
}

const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Bytes allocated under `path` (sparse files count their written blocks only). */
function allocatedUnder(path) {
  return Number(spawnSync("du", ["-sB1", path], { encoding: "utf8" }).stdout.split(/\s/)[0]);
}

/**
 * Per-child figures the API cannot show (it makes the children inside one request): the container
 * backend driven directly on a state dir of its own, on the server's images. A parent with a
 * FORK_MB workspace, `state` running (with a busy process) or stopped, is captured once and
 * FORK_COUNT children are made from the capture one after another. The state dir is made under
 * `under` (the data dir, or a filesystem with reflinks).
 */
async function backendForks(state, warmDisks, under = dataDir) {
  const stateDir = mkdtempSync(join(under, "fork-bench-"));
  const diskMb = Math.max(1024, FORK_MB * 2);
  const backend = new ContainerBackend({
    stateDir,
    imagesDir: config.imagesDir ?? join(dataDir, "container", "images"),
    warmDisks,
    warmDiskMb: diskMb,
  });
  const spec = (shellId, captureId) => ({
    shellId,
    language: "bash",
    runtime: "container",
    network: "sealed",
    resources: { cpu: 1, memoryMb: 256, pids: 256, diskMb },
    env: {},
    ...(captureId ? { from: { captureId } } : {}),
  });
  const exec = (shellId, script) =>
    backend.exec(shellId, {
      command: ["sh", "-c", script],
      env: {},
      cwd: "/workspace",
      stdin: undefined,
      timeoutMs: 600_000,
      maxOutputBytes: 65536,
    });
  try {
    await backend.create(spec("parent"));
    await exec("parent", `head -c ${FORK_MB * 1024 * 1024} /dev/urandom > /workspace/data`);
    if (state === "stopped") await backend.stop("parent");
    else await exec("parent", "(while :; do sleep 0.01; done) >/dev/null 2>&1 &");
    await backend.warm();
    spawnSync("sync");
    const before = allocatedUnder(stateDir);
    const fsBefore = statfsUsedBytes(stateDir);
    let t0 = performance.now();
    const capture = await backend.captureFork("parent");
    const captureMs = performance.now() - t0;
    const create = [];
    const toExec = [];
    for (let i = 0; i < FORK_COUNT; i += 1) {
      t0 = performance.now();
      await backend.create(spec(`child-${i}`, capture.captureId));
      create.push(performance.now() - t0);
      await exec(`child-${i}`, "true");
      toExec.push(performance.now() - t0);
    }
    await backend.releaseFork(capture.captureId);
    spawnSync("sync");
    return {
      method: capture.method,
      captureMs,
      frozenMs: capture.frozenMs,
      create: summary(create),
      toExec: summary(toExec),
      usedBytes: allocatedUnder(stateDir) - before,
      fsUsedBytes: statfsUsedBytes(stateDir) - fsBefore,
    };
  } finally {
    for (const shell of await backend.list()) await backend.destroy(shell.shellId);
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/**
 * On the backend alone: create→first exec of shells claimed from a warm sandbox pool of
 * ITERATIONS bash sandboxes, against creates of a disk size the pool does not hold (each starts
 * its own sandbox) on the same backend.
 */
async function backendClaims() {
  const stateDir = mkdtempSync(join(dataDir, "pool-bench-"));
  const backend = new ContainerBackend({
    stateDir,
    imagesDir: config.imagesDir ?? join(dataDir, "container", "images"),
    pool: { bash: ITERATIONS },
    warmDiskMb: 1024,
  });
  const timeCreate = (diskMb) =>
    timeRuns(ITERATIONS, async () => {
      const shellId = `s-${diskMb}-${Math.random().toString(36).slice(2, 10)}`;
      await backend.create({
        shellId,
        language: "bash",
        runtime: "container",
        network: "sealed",
        resources: { cpu: 1, memoryMb: 256, pids: 256, diskMb },
        env: {},
      });
      await backend.exec(shellId, {
        command: ["true"],
        env: {},
        cwd: "/",
        stdin: undefined,
        timeoutMs: 60_000,
        maxOutputBytes: 65536,
      });
    });
  try {
    await backend.recover();
    await backend.warm();
    return { claimed: summary(await timeCreate(1024)), own: summary(await timeCreate(512)) };
  } finally {
    for (const shell of await backend.list()) await backend.destroy(shell.shellId);
    await backend.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/**
 * The backend's fork of a running parent with its state dir on a scratch XFS with reflinks (made
 * and torn down here), next to raw `cp --reflink=always` and `cp -a` of the same size on that XFS.
 */
async function reflinkForks() {
  // Room for the parent's disk, the baselines' source and one `cp -a` of it, and the children.
  const xfs = mountScratchXfs(dataDir, Math.max(4096, FORK_MB * 6));
  if (typeof xfs === "string") {
    log(`backend fork on an XFS state dir: skipped (${xfs})`);
    return;
  }
  try {
    const onXfs = rawCopyBaseline(xfs.mountPoint, FORK_MB);
    log(
      `baseline raw \`cp --reflink=always\` of ${FORK_MB} MiB on XFS: p50 ${onXfs.reflink ? ms(onXfs.reflink.p50) : "n/a (no reflinks)"}  (n=${onXfs.reflink?.n ?? 0}); raw \`cp -a --reflink=never\` there p50 ${ms(onXfs.copy.p50)}`,
    );
    for (const warmDisks of [0, FORK_COUNT]) {
      const run = await backendForks("running", warmDisks, xfs.mountPoint);
      log(
        `backend fork into ${FORK_COUNT}, parent running, state dir on XFS (reflinks)${warmDisks ? `, ${warmDisks} warm disks` : ""}: capture ${ms(run.captureMs)} (${run.method}), parent frozen ${ms(run.frozenMs)}, then per child create p50 ${ms(run.create.p50)} p99 ${ms(run.create.p99)}, create→first exec p50 ${ms(run.toExec.p50)} p99 ${ms(run.toExec.p99)} (${ratio(run.toExec.p50)}); capture = ${(run.captureMs / onXfs.copy.p50).toFixed(3)}× raw cp -a --reflink=never, ${onXfs.reflink ? `${(run.captureMs / onXfs.reflink.p50).toFixed(1)}× raw cp --reflink=always` : "no raw reflink"} on this XFS`,
      );
      log(
        `  XFS space used by capture + ${FORK_COUNT} children (statfs): ${mib(run.fsUsedBytes)} (one copy: ${FORK_MB} MiB; a copy each: ${FORK_COUNT * FORK_MB} MiB; warm-pool refills included)`,
      );
    }
  } finally {
    await xfs.remove();
  }
}

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

/** Whether a pool server's sandbox pool holds `count` started, unclaimed sandboxes. */
function sandboxPoolFull(pooledDir, count) {
  const boxes = join(pooledDir, "container", "boxes");
  if (!existsSync(boxes)) return false;
  let ready = 0;
  for (const box of readdirSync(boxes)) {
    let record = null;
    try {
      record = JSON.parse(readFileSync(join(boxes, box, "shell.json"), "utf8"));
    } catch {
      // being made (or torn down) right now
    }
    if (record?.phase === "ready" && record.shellId === box) ready += 1;
  }
  return ready >= count;
}

/**
 * Create→first exec on a second server with a pool, measured once the pool is full; it refills
 * meanwhile. `disks`: the container backend keeps `ITERATIONS` formatted disks ready
 * (`SHELLS_CONTAINER_WARM_DISKS`). `sandboxes`: it keeps `ITERATIONS` started bash sandboxes
 * ready (`SHELLS_CONTAINER_POOL`), and the exec round trip on a claimed shell is timed after.
 * `internet`: it keeps `ITERATIONS` started `bash:internet` sandboxes, claimed by `internet` shells.
 */
async function createToExecWithPool(kind) {
  const pooledDir = mkdtempSync(join(tmpdir(), "shells-bench-pool-"));
  const pooledServer = await startServer(
    loadConfig(
      ["--port", "0", "--host", "127.0.0.1", "--data-dir", pooledDir, "--log-level", "warn"],
      {
        ...process.env,
        SHELLS_IMAGES_DIR: config.imagesDir ?? join(dataDir, "container", "images"),
        ...(kind === "disks"
          ? { SHELLS_CONTAINER_WARM_DISKS: String(ITERATIONS) }
          : {
              SHELLS_CONTAINER_POOL: `bash${kind === "internet" ? ":internet" : ""}=${ITERATIONS}`,
            }),
      },
    ),
  );
  const client = new ShellsClient({
    baseUrl: pooledServer.url,
    token: readFileSync(join(pooledDir, "admin-token"), "utf8").trim(),
  });
  const ids = [];
  try {
    for (;;) {
      if (kind !== "disks") {
        if (sandboxPoolFull(pooledDir, ITERATIONS)) break;
      } else {
        const ready = await (await fetch(`${pooledServer.url}/readyz`)).json();
        const pool = ready.runtimes.find((r) => r.runtime === "container")?.warmPool;
        if (!pool || pool.ready >= pool.target) break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    // This host's speed drifts between runs and within one: each create→exec is paired with a raw
    // `bwrap … true` spawn right before it.
    const toExec = await pairedWithRawBwrap(ITERATIONS, async () => {
      const shell = await client.create({
        language: "bash",
        runtime: "container",
        ...(kind === "internet" ? { network: "internet" } : {}),
      });
      await client.exec(shell.id, { command: ["true"] });
      ids.push(shell.id);
    });
    if (kind !== "sandboxes") return { toExec };
    const claimed = ids[0];
    // Timed with the pool full again (it refills once the creates are over).
    while (!sandboxPoolFull(pooledDir, ITERATIONS)) await new Promise((r) => setTimeout(r, 200));
    const exec = await pairedWithRawBwrap(ITERATIONS * 2, () =>
      client.exec(claimed, { command: ["true"] }),
    );
    return { toExec, exec };
  } finally {
    for (const id of ids) await client.delete(id).catch(() => undefined);
    await pooledServer.close();
    rmSync(pooledDir, { recursive: true, force: true });
  }
}
const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
const shells = new ShellsClient({ baseUrl: server.url, token });
const created = [];
try {
  let t0 = performance.now();
  const warm = await shells.create({ language: "bash" });
  created.push(warm.id);
  // A first create on a data dir without the image answers `provisioning` while it builds.
  await shells.waitUntilRunning(warm.id, { timeoutMs: 600_000 });
  await shells.exec(warm.id, { command: ["true"] });
  log(
    `first create (includes building/caching the bash image when absent): ${ms(performance.now() - t0)}`,
  );

  // create → first exec
  if (want("create")) {
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

    // create → first exec with a warm disk pool, then with a warm sandbox pool (second servers
    // on the same images)
    if (BACKEND === "container") {
      const paired = (p) =>
        `${p.ratio.toFixed(2)}× raw bwrap paired round by round (raw p50 ${ms(p.raw.p50)})`;
      const { toExec: disks } = await createToExecWithPool("disks");
      log(
        `API create→first exec, warm disks: p50 ${ms(disks.op.p50)}  p99 ${ms(disks.op.p99)}  (n=${disks.op.n})  p50 = ${ratio(disks.op.p50)}, ${paired(disks)}, ${(disks.op.p50 / c.p50).toFixed(2)}× without the pool`,
      );
      const { toExec: boxes, exec } = await createToExecWithPool("sandboxes");
      log(
        `API create→first exec, warm sandbox pool: p50 ${ms(boxes.op.p50)}  p99 ${ms(boxes.op.p99)}  (n=${boxes.op.n})  p50 = ${ratio(boxes.op.p50)}, ${paired(boxes)}, ${(boxes.op.p50 / c.p50).toFixed(2)}× without the pool`,
      );
      log(
        `API exec round trip, claimed shell:      p50 ${ms(exec.op.p50)}  p99 ${ms(exec.op.p99)}  (n=${exec.op.n})  p50 = ${ratio(exec.op.p50)}, ${paired(exec)}`,
      );
      // `internet` shells: their own egress proxy (control plane) and forwarder and walls
      // (sandbox) each; from the pool's `:internet` sandboxes, the sandbox's part is made ahead.
      const internetToExec = summary(
        await timeRuns(ITERATIONS, async () => {
          const shell = await shells.create({ language: "bash", network: "internet" });
          await shells.exec(shell.id, { command: ["true"] });
          created.push(shell.id);
        }),
      );
      for (const id of created.splice(1)) await shells.delete(id);
      const { toExec: internet } = await createToExecWithPool("internet");
      log(
        `API create→first exec, internet shell: p50 ${ms(internetToExec.p50)}  p99 ${ms(internetToExec.p99)}  p50 = ${ratio(internetToExec.p50)}; from the :internet pool: p50 ${ms(internet.op.p50)}  p99 ${ms(internet.op.p99)}  p50 = ${ratio(internet.op.p50)}, ${paired(internet)}, ${(internet.op.p50 / internetToExec.p50).toFixed(2)}× without the pool`,
      );
      const { claimed, own } = await backendClaims();
      log(
        `backend create→first exec, claimed from the pool: p50 ${ms(claimed.p50)}  p99 ${ms(claimed.p99)}  p50 = ${ratio(claimed.p50)}; starting its own sandbox: p50 ${ms(own.p50)}  p99 ${ms(own.p99)}  p50 = ${ratio(own.p50)}`,
      );
    }
  }

  // a burst of concurrent creates, against as many raw bwrap spawns at once
  if (want("burst")) {
    const rawBursts = summary(await rawBurst(RAW_BWRAP_ARGV, BURST));
    log(
      `baseline ${BURST} raw \`bwrap … true\` at once:  p50 ${ms(rawBursts.p50)}  p99 ${ms(rawBursts.p99)}`,
    );
    const burstTimes = [];
    const burstErrors = {};
    t0 = performance.now();
    await Promise.all(
      Array.from({ length: BURST }, async () => {
        const started = performance.now();
        try {
          const shell = await shells.create({ language: "bash" });
          burstTimes.push(performance.now() - started);
          created.push(shell.id);
        } catch (error) {
          burstErrors[error.code ?? "unknown"] = (burstErrors[error.code ?? "unknown"] ?? 0) + 1;
        }
      }),
    );
    const burstMs = performance.now() - t0;
    const b = summary(burstTimes);
    log(
      `API ${BURST} concurrent creates:        p50 ${ms(b.p50)}  p99 ${ms(b.p99)}  ${b.n} made, ${BURST - b.n} failed ${JSON.stringify(burstErrors)}, ${ms(burstMs)} in all  p50 = ${(b.p50 / rawBursts.p50).toFixed(2)}× the raw burst`,
    );
    for (const id of created.splice(1)) await shells.delete(id);
  }

  // exec round trip
  if (want("exec")) {
    const rtt = await pairedWithRawBwrap(ITERATIONS * 5, () =>
      shells.exec(warm.id, { command: ["true"] }),
    );
    log(
      `API exec round trip:               p50 ${ms(rtt.op.p50)}  p99 ${ms(rtt.op.p99)}  (n=${rtt.op.n})  p50 = ${ratio(rtt.op.p50)}, ${rtt.ratio.toFixed(2)}× raw bwrap paired round by round (raw p50 ${ms(rtt.raw.p50)})`,
    );
    // An agent's or a person's execs come with pauses between them: after 100 ms without an exec
    // a ready helper waits in the shell (the pause is not timed).
    const afterPause = await pairedWithRawBwrap(ITERATIONS * 2, async () => {
      await new Promise((r) => setTimeout(r, 200));
      const started = performance.now();
      await shells.exec(warm.id, { command: ["true"] });
      return performance.now() - started;
    });
    log(
      `API exec after a 200 ms pause:     p50 ${ms(afterPause.op.p50)}  p99 ${ms(afterPause.op.p99)}  (n=${afterPause.op.n})  p50 = ${ratio(afterPause.op.p50)}, ${afterPause.ratio.toFixed(2)}× raw bwrap paired round by round (raw p50 ${ms(afterPause.raw.p50)})`,
    );
  }

  // throughput with concurrent clients
  if (want("throughput")) {
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
  }

  // pause / resume, against the raw freezer in the same run
  if (want("pause")) {
    const raw = await rawFreezeBaseline(PAUSE_ROUNDS);
    if (raw)
      log(
        `baseline raw cgroup freeze / thaw:   p50 ${ms(raw.freeze.p50)} / ${ms(raw.thaw.p50)}  p99 ${ms(raw.freeze.p99)} / ${ms(raw.thaw.p99)}  (n=${raw.freeze.n})`,
      );
    const paused = await shells.create({ language: "bash" });
    created.push(paused.id);
    await shells.exec(paused.id, {
      command: ["sh", "-c", "(while :; do sleep 0.01; done) >/dev/null 2>&1 &"],
    });
    const pauses = [];
    const resumes = [];
    for (let i = 0; i < PAUSE_ROUNDS; i += 1) {
      t0 = performance.now();
      await shells.action(paused.id, "pause");
      pauses.push(performance.now() - t0);
      t0 = performance.now();
      await shells.action(paused.id, "resume");
      resumes.push(performance.now() - t0);
    }
    const p = summary(pauses);
    const r = summary(resumes);
    log(
      `API pause / resume:                p50 ${ms(p.p50)} / ${ms(r.p50)}  p99 ${ms(p.p99)} / ${ms(r.p99)}  (n=${p.n})${raw ? `  p50 = ${(p.p50 / raw.freeze.p50).toFixed(1)}× / ${(r.p50 / raw.thaw.p50).toFixed(1)}× raw` : ""}`,
    );
  }

  // fork of a shell with a FORK_MB workspace into FORK_COUNT shells, parent running (one copy into
  // a shared layer) and stopped (its disk becomes the layer), against raw baselines of the same run;
  // then a running parent on a state dir with reflinks (a scratch XFS), where that copy is a reflink
  if (want("fork")) {
    const copyBaseline = rawCopyBaseline(dataDir, FORK_MB);
    log(
      `baseline raw \`cp -a --reflink=never\` of ${FORK_MB} MiB:      p50 ${ms(copyBaseline.copy.p50)}  (n=${copyBaseline.copy.n}; reflinks on this filesystem: ${copyBaseline.reflinks ? "yes" : "no"})`,
    );
    const parent = await shells.create({
      language: "bash",
      resources: { diskMb: Math.max(1024, FORK_MB * 2) },
    });
    created.push(parent.id);
    await shells.exec(parent.id, {
      command: ["sh", "-c", `head -c ${FORK_MB * 1024 * 1024} /dev/urandom > /workspace/data`],
      timeoutMs: 600_000,
    });
    await shells.exec(parent.id, {
      command: ["sh", "-c", "(while :; do sleep 0.01; done) >/dev/null 2>&1 &"],
    });
    for (const state of ["running", "stopped"]) {
      if (state === "stopped") await shells.action(parent.id, "stop");
      spawnSync("sync");
      const freeBefore = statfsFreeBytes(dataDir);
      t0 = performance.now();
      const fork = await shells.fork(parent.id, { count: FORK_COUNT });
      const forkMs = performance.now() - t0;
      spawnSync("sync");
      const freeAfter = statfsFreeBytes(dataDir);
      const { method, parentFrozenMs } = fork.state.filesystem;
      log(
        `API fork of a ${FORK_MB} MiB workspace into ${fork.shells.length}, parent ${state}: ${ms(forkMs)} in all, ${ms(forkMs / fork.shells.length)} per child (filesystem ${method}, parent frozen ${ms(parentFrozenMs)}); host disk used ${mib(freeBefore - freeAfter)} (a copy each: ${FORK_COUNT * FORK_MB} MiB)`,
      );
      for (const child of fork.shells) await shells.delete(child.id);
    }
    if (BACKEND === "container") {
      for (const [state, warmDisks] of [
        ["running", 0],
        ["stopped", 0],
        ["running", FORK_COUNT],
        ["stopped", FORK_COUNT],
      ]) {
        const run = await backendForks(state, warmDisks);
        log(
          `backend fork into ${FORK_COUNT}, parent ${state}${warmDisks ? `, ${warmDisks} warm disks` : ""}: capture ${ms(run.captureMs)} (${run.method}), then per child create p50 ${ms(run.create.p50)} p99 ${ms(run.create.p99)}, create→first exec p50 ${ms(run.toExec.p50)} p99 ${ms(run.toExec.p99)}  p50 = ${ratio(run.toExec.p50)}, ${(run.toExec.p50 / copyBaseline.copy.p50).toFixed(3)}× raw cp -a`,
        );
        log(
          `  host disk used by capture + ${FORK_COUNT} children: ${mib(run.usedBytes)} (a copy each: ${FORK_COUNT * FORK_MB} MiB; warm-pool refills included)`,
        );
      }
      await reflinkForks();
    }
  }

  // idle shells
  if (want("idle")) {
    const before = meminfoKb("MemAvailable");
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
    const usedKb = before - meminfoKb("MemAvailable");
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
  }
} finally {
  for (const id of created) await shells.delete(id).catch(() => undefined);
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
}
