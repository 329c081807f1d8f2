// Crash cycles: the real control plane (apps/server/dist/server.js) is killed with SIGKILL at a
// random point of one lifecycle operation after another, restarted on the same data dir and
// database, and checked after every restart. Shared by test/e2e/crash.e2e.test.ts (a short run in
// `npm test`) and bench/crash-bench.mjs (a long one, with restart-to-ready percentiles).
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import Database from "better-sqlite3";
import { verifyActivityChain } from "@shells/contract";

/** Every operation a cycle may cut, in the order cycles take them. */
export const CRASH_OPERATIONS = [
  "create",
  "exec",
  "delete",
  "wipe_state",
  "snapshot",
  "restore",
  "stop",
  "start",
];

/**
 * Longest wait before the kill, per operation, ms: about the operation's own length on the
 * container backend, so kills land before, inside and after it.
 */
const KILL_WINDOW_MS = {
  create: 400,
  exec: 400,
  delete: 300,
  wipe_state: 400,
  snapshot: 300,
  restore: 400,
  stop: 250,
  start: 300,
};

/** The most shells kept between cycles (older ones are deleted before a cycle, not during it). */
const MAX_SHELLS = 4;

/** A small seeded generator (mulberry32), so a failing run can be repeated with its seed. */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A free TCP port on loopback. */
async function freePort() {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * One JSON request on a connection of its own (a killed server leaves no pooled connection to
 * trip over). Resolves `{ status, body, headers }`; rejects when the connection breaks.
 */
function call(server, method, path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest(
      `${server.url}${path}`,
      {
        method,
        agent: false,
        headers: {
          authorization: `Bearer ${server.token}`,
          ...(payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }),
          ...headers,
        },
        timeout: 60_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => {
          let parsed = null;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            parsed = { unparsed: text };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * The host objects of a data dir's container shells: loop devices backed by their disks, their
 * cgroups, processes naming their directories, and mounts under the data dir.
 */
export function hostObjectsOf(dataDir) {
  const shellsDir = `${dataDir}/container/shells/`;
  const tag = createHash("sha256").update(`${dataDir}/container`).digest("hex").slice(0, 8);
  const shellOf = (text) => new RegExp(`${shellsDir}([A-Za-z0-9_.-]+)`).exec(text)?.[1] ?? null;
  const objects = [];
  for (const device of readdirSync("/sys/block")) {
    if (!device.startsWith("loop")) continue;
    let backing = "";
    try {
      backing = readFileSync(`/sys/block/${device}/loop/backing_file`, "utf8").trim();
    } catch {
      continue;
    }
    if (backing.startsWith(dataDir))
      objects.push({ kind: "loop", shellId: shellOf(backing), what: `${device} ${backing}` });
  }
  const cgroupRoots = ["/sys/fs/cgroup", ...listDirs("/sys/fs/cgroup")];
  for (const root of cgroupRoots) {
    for (const name of listDirs(`${root}/shells`).map((dir) => dir.split("/").pop())) {
      if (name.endsWith(`.${tag}`))
        objects.push({ kind: "cgroup", shellId: name.slice(0, -tag.length - 1), what: name });
    }
  }
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
      continue;
    }
    if (cmdline.includes(dataDir) && !cmdline.includes("apps/server/dist/server.js"))
      objects.push({ kind: "process", shellId: shellOf(cmdline), what: `${pid} ${cmdline}` });
  }
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const mountPoint = line.split(" ")[4] ?? "";
    if (mountPoint.startsWith(dataDir))
      objects.push({ kind: "mount", shellId: shellOf(mountPoint), what: mountPoint });
  }
  return objects;
}

function listDirs(dir) {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => `${dir}/${entry.name}`);
  } catch {
    return [];
  }
}

/**
 * Runs `cycles` crash cycles and returns what was checked. Options: `cycles`, `seed`, `backend`
 * (`container`, or `simulator` where the host cannot run containers: then nothing outlives a
 * kill and host objects are not checked), `dataDir` (made by the caller, removed by it),
 * `imagesDir`, `log` (one line per cycle). Every failed check is a line in `failures`.
 */
export async function runCrashCycles(options) {
  const { cycles, dataDir, backend = "container" } = options;
  const seed = options.seed ?? randomBytes(4).readUInt32BE(0);
  const rand = random(seed);
  const log = options.log ?? (() => undefined);
  const failures = [];
  const fail = (cycle, text) => failures.push(`cycle ${cycle} (seed ${seed}): ${text}`);
  const checked = {
    cycles: 0,
    killedMidRequest: 0,
    keyedRetries: 0,
    keysAnsweredFirstOutcome: 0,
    creates: 0,
    shellsChecked: 0,
    hostChecks: 0,
    chainEvents: 0,
  };
  const restartToReadyMs = [];
  const port = await freePort();
  const server = { url: `http://127.0.0.1:${port}`, token: "" };
  let child = null;

  const start = async () => {
    const started = performance.now();
    child = spawn(
      process.execPath,
      [
        "apps/server/dist/server.js",
        "--backend",
        backend,
        "--data-dir",
        dataDir,
        "--port",
        String(port),
        "--log-level",
        "warn",
      ],
      {
        env: {
          ...process.env,
          ...(options.imagesDir ? { SHELLS_IMAGES_DIR: options.imagesDir } : {}),
          SHELLS_VALIDATE_RESPONSES: "1",
        },
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4000)));
    const exited = new Promise((resolve) => child.once("exit", resolve));
    for (;;) {
      const ready = await new Promise((resolve) => {
        const req = httpRequest(`${server.url}/readyz`, { agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        });
        req.on("error", () => resolve(false));
        req.end();
      });
      if (ready) break;
      const gone = await Promise.race([exited.then(() => true), sleep(15).then(() => false)]);
      if (gone) throw new Error(`the server exited while starting: ${stderr}`);
      if (performance.now() - started > 60_000) throw new Error("the server did not get ready");
    }
    const readyMs = performance.now() - started;
    server.token = readFileSync(`${dataDir}/admin-token`, "utf8").trim();
    return readyMs;
  };
  const kill = async () => {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };

  const shells = async (query = "") =>
    (await call(server, "GET", `/api/v1/shells?limit=200${query}`)).body.items;
  const act = (id, capability, body = {}, key) =>
    call(
      server,
      "POST",
      `/api/v1/shells/${id}/actions/${capability}`,
      { ...body, confirm: id },
      key ? { "idempotency-key": key } : {},
    );
  const create = (key) =>
    call(
      server,
      "POST",
      "/api/v1/shells",
      { language: "bash" },
      key ? { "idempotency-key": key } : {},
    );
  const remove = (id, key) =>
    call(
      server,
      "DELETE",
      `/api/v1/shells/${id}?confirm=${id}`,
      undefined,
      key ? { "idempotency-key": key } : {},
    );
  const exec = (id, command) => call(server, "POST", `/api/v1/shells/${id}/exec`, { command });

  /** A shell in `status` (running or stopped), made or brought there before the kill window. */
  const subject = async (cycle, status, withSnapshot = false) => {
    const live = await shells();
    let shell =
      live.find((s) => s.status === status) ??
      live.find((s) => ["running", "stopped", "error", "paused"].includes(s.status));
    if (!shell) {
      const made = await create();
      if (made.status !== 201) throw new Error(`preparing: create answered ${made.status}`);
      shell = made.body;
    }
    const bring = async (capability) => {
      const res = await act(shell.id, capability);
      if (res.status !== 200)
        throw new Error(
          `preparing: ${capability} answered ${res.status} ${JSON.stringify(res.body)}`,
        );
      shell = res.body.shell;
    };
    if (shell.status === "error" || shell.status === "paused") await bring("restart");
    if (status === "running" && shell.status === "stopped") await bring("start");
    if (status === "stopped" && shell.status === "running") await bring("stop");
    if (withSnapshot) {
      const snaps = (await call(server, "GET", `/api/v1/shells/${shell.id}/snapshots`)).body.items;
      if (snaps.length === 0) {
        const res = await act(shell.id, "snapshot", { name: `base-${cycle}` });
        if (res.status !== 200) throw new Error(`preparing: snapshot answered ${res.status}`);
      }
    }
    return shell;
  };

  /** Deletes shells beyond MAX_SHELLS, so a long run keeps a bounded host. */
  const trim = async () => {
    const live = await shells();
    for (const shell of live.slice(MAX_SHELLS)) await remove(shell.id);
  };

  /** What the operation of this cycle sends, and how its retry is judged. */
  const operationFor = async (cycle, op, key) => {
    switch (op) {
      case "create":
        return { send: () => create(key), keyed: true, shellId: null };
      case "exec": {
        const shell = await subject(cycle, "running");
        const script = "echo a >> /workspace/log; sleep 0.2; echo b >> /workspace/log";
        return {
          send: () => exec(shell.id, ["sh", "-c", script]),
          keyed: false,
          shellId: shell.id,
        };
      }
      case "delete": {
        const shell = await subject(cycle, "running");
        return { send: () => remove(shell.id, key), keyed: true, shellId: shell.id };
      }
      case "restore": {
        const shell = await subject(cycle, "running", true);
        return { send: () => act(shell.id, "restore", {}, key), keyed: true, shellId: shell.id };
      }
      case "start": {
        const shell = await subject(cycle, "stopped");
        return { send: () => act(shell.id, "start", {}, key), keyed: true, shellId: shell.id };
      }
      default: {
        const shell = await subject(cycle, "running");
        const body = op === "snapshot" ? { name: `snap-${cycle}` } : {};
        return { send: () => act(shell.id, op, body, key), keyed: true, shellId: shell.id };
      }
    }
  };

  /** Checks every shell against the host after a restart (the store is the truth). */
  const checkShells = async (cycle) => {
    const live = await shells();
    const provisioning = live.filter((s) => s.status === "provisioning");
    if (provisioning.length > 0)
      fail(cycle, `shells stuck in provisioning: ${provisioning.map((s) => s.id).join(", ")}`);
    for (const shell of live) {
      checked.shellsChecked += 1;
      if (shell.status !== "running") continue;
      const res = await exec(shell.id, ["true"]);
      if (res.status !== 200 || res.body.exitCode !== 0)
        fail(cycle, `running shell ${shell.id} does not run a command: ${res.status}`);
    }
    if (backend !== "container") return;
    // A host object belongs to a shell the store says runs (a mount on the host never does);
    // anything else is a leak. What an operation cut at the kill may still be ending is given a
    // few seconds.
    const running = new Set(
      live.filter((s) => s.status === "running" || s.status === "paused").map((s) => s.id),
    );
    let leaks = [];
    for (let attempt = 0; attempt < 50; attempt++) {
      leaks = hostObjectsOf(dataDir).filter(
        (o) => o.kind === "mount" || o.shellId === null || !running.has(o.shellId),
      );
      if (leaks.length === 0) break;
      await sleep(100);
    }
    checked.hostChecks += 1;
    for (const leak of leaks) fail(cycle, `leaked ${leak.kind}: ${leak.what}`);
    const stopped = live.filter((s) => s.status === "stopped" || s.status === "error");
    for (const shell of stopped) {
      if (
        !existsSync(`${dataDir}/container/shells/${shell.id}/disk.img`) &&
        shell.status === "stopped"
      )
        fail(cycle, `stopped shell ${shell.id} has no disk`);
    }
  };

  /** Pending keys left in the store (there must be none once the server is ready). */
  const pendingKeys = () => {
    const db = new Database(`${dataDir}/shells.db`, { readonly: true, fileMustExist: true });
    try {
      return db.prepare("SELECT key FROM idempotency_keys WHERE state = 'pending'").all();
    } finally {
      db.close();
    }
  };

  try {
    restartToReadyMs.push(await start());
    for (let cycle = 0; cycle < cycles; cycle++) {
      const op = CRASH_OPERATIONS[cycle % CRASH_OPERATIONS.length];
      const key = `crash-${seed}-${cycle}`;
      await trim();
      const operation = await operationFor(cycle, op, key);
      const before = new Set((await shells()).map((s) => s.id));
      const killAfterMs = Math.round(rand() * KILL_WINDOW_MS[op]);
      let first = null;
      const sent = operation.send().then(
        (res) => (first = res),
        () => null,
      );
      await sleep(killAfterMs);
      await kill();
      await sent;
      if (first === null) checked.killedMidRequest += 1;
      restartToReadyMs.push(await start());
      checked.cycles += 1;

      const pending = pendingKeys();
      if (pending.length > 0)
        fail(
          cycle,
          `pending idempotency keys after a restart: ${pending.map((k) => k.key).join(", ")}`,
        );
      if (operation.keyed) {
        const retry = await operation.send();
        checked.keyedRetries += 1;
        if (retry.status >= 500 || retry.body?.error?.code === "request_in_progress")
          fail(
            cycle,
            `${op} retried with its key answered ${retry.status} ${JSON.stringify(retry.body)}`,
          );
        if (first !== null && first.status < 500) {
          checked.keysAnsweredFirstOutcome += 1;
          if (
            retry.status !== first.status ||
            JSON.stringify(retry.body) !== JSON.stringify(first.body) ||
            retry.headers["idempotent-replayed"] !== "true"
          )
            fail(
              cycle,
              `${op} retry answered ${retry.status} ${JSON.stringify(retry.body)}, not a replay of the first answer ${first.status} ${JSON.stringify(first.body)}`,
            );
        }
        if (op === "create") {
          checked.creates += 1;
          const made = (await shells()).filter((s) => !before.has(s.id));
          if (made.length !== 1 || made[0].id !== retry.body?.id)
            fail(
              cycle,
              `a cut create and its retry made ${made.length} shells (answer ${retry.body?.id})`,
            );
        }
        if (op === "delete") {
          const after = (await call(server, "GET", `/api/v1/shells/${operation.shellId}`)).body;
          if (after.status !== "deleted")
            fail(cycle, `a deleted shell is ${after.status} after its delete was retried`);
        }
        if (op === "start" && retry.status === 200 && retry.body.shell?.status !== "running")
          fail(cycle, `a started shell is ${retry.body.shell?.status}`);
      }
      if (op === "wipe_state" || op === "restore") {
        // A cut step that replaces state must leave a shell that starts.
        const shell = (await call(server, "GET", `/api/v1/shells/${operation.shellId}`)).body;
        if (shell.status === "stopped") {
          const res = await act(shell.id, "start");
          if (res.status !== 200)
            fail(cycle, `after a cut ${op} the shell does not start: ${res.status}`);
        }
      }
      await checkShells(cycle);
      log(
        `cycle ${cycle}: ${op} killed after ${killAfterMs} ms (${first === null ? "mid-request" : `answered ${first.status}`}), ready again in ${Math.round(restartToReadyMs.at(-1))} ms`,
      );
    }
    // The history of everything the cycles did, across every crash, still verifies.
    const events = [];
    let cursor = "";
    do {
      const page = (
        await call(
          server,
          "GET",
          `/api/v1/activity?order=asc&limit=500${cursor ? `&cursor=${cursor}` : ""}`,
        )
      ).body;
      events.push(...page.items);
      cursor = page.nextCursor ?? "";
    } while (cursor);
    const chain = await verifyActivityChain(events);
    checked.chainEvents = chain.checked;
    if (!chain.ok) fail(cycles, `the activity chain does not verify: ${chain.reason}`);
    for (const shell of await shells()) await remove(shell.id);
    // A clean stop: SIGTERM ends the process in its grace and leaves every sandbox's objects gone.
    const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    const code = await exited;
    child = null;
    if (code !== 0) fail(cycles, `the server exited with ${code} on SIGTERM`);
    if (backend === "container") {
      const left = hostObjectsOf(dataDir);
      for (const object of left) fail(cycles, `left on the host: ${object.kind} ${object.what}`);
      const shellDirs = existsSync(`${dataDir}/container/shells`)
        ? readdirSync(`${dataDir}/container/shells`)
        : [];
      if (shellDirs.length > 0) fail(cycles, `shell directories left: ${shellDirs.join(", ")}`);
    }
  } finally {
    if (child) await kill().catch(() => undefined);
  }
  return { seed, checked, failures, restartToReadyMs };
}
