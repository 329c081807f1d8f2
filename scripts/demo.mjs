#!/usr/bin/env node
// `npm run demo`: the adversarial demo in one command. Prepares the host like `npm start`, builds,
// starts a throwaway control plane (a fresh data dir under the OS temp dir, a free loopback port,
// base images cached in ./.shells/container/images as `npm start` keeps them, http binding
// upstreams accepted and 127.0.0.2/32 allowed in the org's egress policy for the demo's own
// binding upstream), runs `shells demo`
// against it, stops it and exits with the demo's status: 0 only when every hostile workload was
// contained. Extra arguments go to `shells demo`: `npm run demo -- --runtime container`.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { prepareHost } from "./prepare-host.mjs";

const step = (message) => console.error(`\u001b[1m▸ ${message}\u001b[0m`);
/** How long the server may take to answer /readyz (it may build nothing at boot). */
const READY_TIMEOUT_MS = 60_000;

if (!prepareHost({ step })) process.exit(1);
step("building (tsc -b)");
if (spawnSync("npx", ["tsc", "-b"], { stdio: "inherit" }).status !== 0) process.exit(1);

/** A loopback port nothing listens on right now. */
async function freePort() {
  const probe = createServer();
  await new Promise((done) => probe.listen(0, "127.0.0.1", done));
  const { port } = probe.address();
  await new Promise((done) => probe.close(done));
  return port;
}

const dataDir = mkdtempSync(join(tmpdir(), "shells-demo-"));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
step(`starting a throwaway control plane on ${url} (data in ${dataDir})`);
const server = spawn(
  process.execPath,
  [
    "apps/server/dist/server.js",
    ...["--port", String(port), "--host", "127.0.0.1", "--data-dir", dataDir],
    ...["--log-level", "info"],
  ],
  {
    stdio: ["ignore", "pipe", "inherit"],
    env: {
      ...process.env,
      SHELLS_IMAGES_DIR: process.env.SHELLS_IMAGES_DIR ?? resolve(".shells/container/images"),
      // The demo's binding workloads call an upstream the demo starts on loopback, in plain HTTP:
      // a throwaway server may accept that; a real one should not (see the README).
      SHELLS_BINDINGS_ALLOW_HTTP: "1",
    },
  },
);
// The server logs JSON lines: show what a person waits for (a first image build takes a minute)
// and anything that went wrong, not every request.
createInterface({ input: server.stdout }).on("line", (line) => {
  try {
    const entry = JSON.parse(line);
    if (entry.level >= 40 || String(entry.msg).startsWith("image build"))
      console.error(`  server: ${entry.msg}`);
  } catch {
    console.error(`  server: ${line}`);
  }
});
const serverExit = new Promise((done) => server.on("exit", (code) => done(code)));

/** Stops the server and removes its data dir. */
async function stopServer() {
  if (server.exitCode === null) server.kill("SIGTERM");
  await serverExit;
  rmSync(dataDir, { recursive: true, force: true });
}
for (const signal of ["SIGINT", "SIGTERM"])
  process.on(signal, () => void stopServer().then(() => process.exit(130)));

async function waitForReady() {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline && server.exitCode === null) {
    const ready = await fetch(`${url}/readyz`).then(
      (res) => res.ok,
      () => false,
    );
    if (ready) return true;
    await new Promise((done) => setTimeout(done, 200));
  }
  return false;
}

let status = 1;
if (await waitForReady()) {
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  // Lets the egress proxy reach the demo's binding upstream on 127.0.0.2 (not the control plane's
  // 127.0.0.1). Shells in `internet` mode could reach that address too: acceptable on a throwaway
  // server whose every shell is the demo's own.
  const allowed = await fetch(`${url}/api/v1/org/policy`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ egress: { allowCidrs: ["127.0.0.2/32"] } }),
  });
  if (!allowed.ok) console.error(`could not allow the demo's loopback upstream: ${allowed.status}`);
  const demo = spawn(
    process.execPath,
    ["apps/cli/bin/shells.js", "--url", url, "--token", token, "demo", ...process.argv.slice(2)],
    { stdio: "inherit" },
  );
  status = await new Promise((done) => demo.on("exit", (code) => done(code ?? 1)));
} else {
  console.error("the control plane did not become ready; its output is above");
}
await stopServer();
process.exit(status);
