#!/usr/bin/env node
// Benchmarks a shell's egress proxy, each number beside its baseline measured in the same run: the
// same client reaching the same loopback upstream directly. Measured: plain HTTP requests (one
// connection each, as `curl` makes them) sequentially for latency and with concurrency for
// throughput; a CONNECT tunnel's setup plus one round trip; and bulk bytes through a tunnel.
//
// The client speaks to the proxy as the shell's forwarder does (its unix socket, a PROXY line,
// then the shell's bytes), so the numbers are the proxy's cost without the forwarder's hop inside
// the sandbox. The proxy is the real one (`apps/server/dist/egress/egress-proxy.js`) with a policy
// of four levels built per connection (org, project, template, shell allowlist); reading the org's
// and project's rules from the store and writing the aggregated decisions are not included.
//
//   npm run build && node bench/egress-bench.mjs
//   BENCH_EGRESS_REQUESTS=5000 BENCH_EGRESS_CONCURRENCY=32 BENCH_EGRESS_MB=512 node bench/egress-bench.mjs
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EgressProxy } from "../apps/server/dist/egress/egress-proxy.js";
import { EgressPolicy } from "../apps/server/dist/egress/policy.js";
import { log, ms, percentile, timeRuns } from "./lib.mjs";

const REQUESTS = Number(process.env.BENCH_EGRESS_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_EGRESS_CONCURRENCY ?? 16);
const TUNNELS = Number(process.env.BENCH_EGRESS_TUNNELS ?? 1000);
const MEGABYTES = Number(process.env.BENCH_EGRESS_MB ?? 256);
const HOST = "bench.test";

const stats = (values) => ({
  n: values.length,
  p50: percentile(values, 50),
  p95: percentile(values, 95),
});
const fmt = ({ n, p50, p95 }) => `p50 ${ms(p50)}  p95 ${ms(p95)}  (n=${n})`;
const ratio = (a, b) => `${(a / b).toFixed(2)}×`;

/** Sends `request` on a new connection and resolves with everything answered until close. */
function exchange(open, request) {
  return new Promise((resolve, reject) => {
    const socket = open();
    let bytes = 0;
    socket.on("data", (chunk) => (bytes += chunk.length));
    socket.on("error", reject);
    socket.on("close", () => resolve(bytes));
    socket.write(request);
  });
}

/** Runs `fn` `total` times with `concurrency` in flight; returns requests per second. */
async function throughput(total, concurrency, fn) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        await fn();
      }
    }),
  );
  return total / ((performance.now() - t0) / 1000);
}

/** Opens a tunnel (`open` returns a socket already asked to CONNECT), resolves once it is up. */
function tunnelUp(socket, expectStatus) {
  return new Promise((resolve, reject) => {
    socket.on("error", reject);
    if (!expectStatus) {
      socket.once("connect", () => resolve(socket));
      return;
    }
    socket.once("data", (chunk) => {
      const text = chunk.toString("latin1");
      if (!text.startsWith("HTTP/1.1 200")) reject(new Error(`tunnel refused: ${text}`));
      else resolve(socket);
    });
  });
}

/** One round trip of `size` bytes through an echo connection. */
function roundTrip(socket, payload) {
  return new Promise((resolve) => {
    let seen = 0;
    const onData = (chunk) => {
      seen += chunk.length;
      if (seen >= payload.length) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
    socket.write(payload);
  });
}

/** Reads `total` bytes from a sink's reply stream; resolves with MB/s. */
function bulk(socket, total) {
  return new Promise((resolve) => {
    let seen = 0;
    const t0 = performance.now();
    socket.on("data", (chunk) => {
      seen += chunk.length;
      if (seen >= total) {
        socket.destroy();
        resolve(total / 1024 / 1024 / ((performance.now() - t0) / 1000));
      }
    });
    socket.write(`${total}\n`);
  });
}

log(`# Shells egress proxy benchmark — ${new Date().toISOString()} — node ${process.version}`);

const dir = mkdtempSync(join(tmpdir(), "shells-egress-bench-"));
const body = "x".repeat(1024);
const upstream = createHttpServer((_req, res) => res.end(body));
const echo = createTcpServer((socket) => socket.pipe(socket));
// Sends as many bytes as the first line asks for.
const source = createTcpServer((socket) => {
  socket.once("data", (line) => {
    let left = Number(line.toString().trim());
    const chunk = Buffer.alloc(64 * 1024, 120);
    const pump = () => {
      while (left > 0) {
        const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= part.length;
        if (!socket.write(part)) return;
      }
    };
    socket.on("drain", pump);
    pump();
  });
  socket.on("error", () => socket.destroy());
});
const listen = (server) =>
  new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
const [httpPort, echoPort, sourcePort] = await Promise.all([
  listen(upstream),
  listen(echo),
  listen(source),
]);

const org = {
  allowHosts: [],
  denyHosts: ["*.blocked.example"],
  allowCidrs: ["127.0.0.1/32"],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [25],
};
const socketPath = join(dir, "proxy.sock");
const proxy = new EgressProxy({
  orgId: "org-bench",
  shellId: "sh-bench",
  socketPath,
  policy: async () =>
    new EgressPolicy({
      org,
      project: { denyHosts: ["*.internal.example"] },
      template: { denyPorts: [22] },
      shell: { mode: "allowlist", allow: [HOST] },
    }),
  resolve: async () => ["127.0.0.1"],
  maxConnections: 4096,
  maxBytes: Number.MAX_SAFE_INTEGER,
  // The rate limit is what a shell is allowed, not a cost: out of the way here.
  maxRequestsPerSecond: 1e9,
  record: () => undefined,
});
await proxy.listen();

const viaProxy = () => {
  const socket = connect(socketPath);
  socket.write("PROXY TCP4 10.0.0.2 127.0.0.1 40000 3128\r\n");
  return socket;
};
const direct = (port) => () => connect(port, "127.0.0.1");

try {
  log(
    `plain HTTP GET, 1 KiB body, one connection per request (${REQUESTS} sequential, then ${REQUESTS} with ${CONCURRENCY} in flight)`,
  );
  const directRequest = `GET /x HTTP/1.0\r\nhost: ${HOST}:${httpPort}\r\n\r\n`;
  const proxyRequest = `GET http://${HOST}:${httpPort}/x HTTP/1.0\r\nhost: ${HOST}:${httpPort}\r\n\r\n`;
  // Warm both paths (JIT, socket buffers) before measuring.
  await timeRuns(200, () => exchange(direct(httpPort), directRequest));
  await timeRuns(200, () => exchange(viaProxy, proxyRequest));
  const httpDirect = stats(
    await timeRuns(REQUESTS, () => exchange(direct(httpPort), directRequest)),
  );
  const httpProxy = stats(await timeRuns(REQUESTS, () => exchange(viaProxy, proxyRequest)));
  log(`  direct:        ${fmt(httpDirect)}`);
  log(
    `  through proxy: ${fmt(httpProxy)}  (p50 ${ratio(httpProxy.p50, httpDirect.p50)}, added ${ms(httpProxy.p50 - httpDirect.p50)})`,
  );
  const rpsDirect = await throughput(REQUESTS, CONCURRENCY, () =>
    exchange(direct(httpPort), directRequest),
  );
  const rpsProxy = await throughput(REQUESTS, CONCURRENCY, () => exchange(viaProxy, proxyRequest));
  log(`  direct:        ${rpsDirect.toFixed(0)} requests/s`);
  log(
    `  through proxy: ${rpsProxy.toFixed(0)} requests/s  (${ratio(rpsProxy, rpsDirect)} of direct)`,
  );

  log(`CONNECT tunnel: set up, then one 64-byte round trip (${TUNNELS} sequential)`);
  const payload = Buffer.alloc(64, 97);
  const tunnelDirect = stats(
    await timeRuns(TUNNELS, async () => {
      const socket = await tunnelUp(direct(echoPort)(), false);
      await roundTrip(socket, payload);
      socket.destroy();
    }),
  );
  const tunnelProxy = stats(
    await timeRuns(TUNNELS, async () => {
      const socket = viaProxy();
      const up = tunnelUp(socket, true);
      socket.write(`CONNECT ${HOST}:${echoPort} HTTP/1.1\r\nhost: ${HOST}:${echoPort}\r\n\r\n`);
      await up;
      await roundTrip(socket, payload);
      socket.destroy();
    }),
  );
  log(`  direct:        ${fmt(tunnelDirect)}`);
  log(
    `  through proxy: ${fmt(tunnelProxy)}  (p50 ${ratio(tunnelProxy.p50, tunnelDirect.p50)}, added ${ms(tunnelProxy.p50 - tunnelDirect.p50)})`,
  );

  log(`bulk download through a tunnel: ${MEGABYTES} MiB`);
  const total = MEGABYTES * 1024 * 1024;
  const bulkDirect = await bulk(await tunnelUp(direct(sourcePort)(), false), total);
  const tunnelled = viaProxy();
  const upBulk = tunnelUp(tunnelled, true);
  tunnelled.write(`CONNECT ${HOST}:${sourcePort} HTTP/1.1\r\nhost: ${HOST}:${sourcePort}\r\n\r\n`);
  const bulkProxy = await bulk(await upBulk, total);
  log(`  direct:        ${bulkDirect.toFixed(0)} MiB/s`);
  log(
    `  through proxy: ${bulkProxy.toFixed(0)} MiB/s  (${ratio(bulkProxy, bulkDirect)} of direct)`,
  );
} finally {
  await proxy.close();
  upstream.close();
  echo.close();
  source.close();
  rmSync(dir, { recursive: true, force: true });
}
