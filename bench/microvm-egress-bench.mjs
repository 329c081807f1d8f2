#!/usr/bin/env node
// Benchmarks the way out of a microvm `internet` shell (the guest agent's listener, relayed as
// NET_* frames over its virtio-serial port to the host, which connects the proxy's unix socket)
// next to a container `internet` shell's (native/egress.c in the shell's network namespace), in
// the same run, against the same stand-in proxy: it reads the PROXY line and the request head and
// answers a 2-byte body at once, so the numbers are the path into the proxy and back, not the
// proxy's own work (bench/egress-bench.mjs measures that).
//
// The client is bash in each shell (the bash image has no HTTP client): a new connection to
// 127.0.0.1:3128 per request, read to the end, timed inside one exec with $EPOCHREALTIME (no fork
// per request), so neither the exec round trip nor process start-up is counted.
//
//   npx tsc -b && node bench/microvm-egress-bench.mjs          # as root; SHELLS_TEST_* caches
//   BENCH_EGRESS_REQUESTS=200 node bench/microvm-egress-bench.mjs
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContainerBackend, ensureImage } from "../packages/backend-container/dist/index.js";
import { MicrovmBackend } from "../packages/backend-microvm/dist/index.js";
import { log, ms, percentile } from "./lib.mjs";

const REQUESTS = Number(process.env.BENCH_EGRESS_REQUESTS ?? 100);
const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const MICROVM_CACHE = process.env.SHELLS_TEST_MICROVM_CACHE ?? "/var/cache/shells-test/microvm";
const RESOURCES = { cpu: 1, memoryMb: 128, pids: 64, diskMb: 64 };

const dir = mkdtempSync(join(tmpdir(), "shells-microvm-egress-bench-"));
const socketPath = join(dir, "proxy.sock");
const BULK_MB = Number(process.env.BENCH_EGRESS_BULK_MB ?? 16);
const BULK = Buffer.alloc(BULK_MB << 20, 0x61);
const proxy = createServer((socket) => {
  let seen = "";
  const onData = (chunk) => {
    seen += chunk.toString("latin1");
    if (!seen.includes("\r\n\r\n")) return;
    socket.off("data", onData);
    const bulk = seen.includes("/bulk ");
    socket.write(
      `HTTP/1.0 200 OK\r\ncontent-length: ${bulk ? BULK.length : 2}\r\nconnection: close\r\n\r\n`,
    );
    socket.end(bulk ? BULK : "ok");
  };
  socket.on("data", onData);
  socket.on("error", () => undefined);
});
await new Promise((resolve) => proxy.listen(socketPath, resolve));

// Microseconds per request, one line each.
const CLIENT = `for i in $(seq ${REQUESTS}); do
  t0=$EPOCHREALTIME
  exec 3<>/dev/tcp/127.0.0.1/3128 || exit 1
  printf 'GET http://bench.test/ HTTP/1.0\\r\\nHost: bench.test\\r\\n\\r\\n' >&3
  while read -r -u 3 line; do :; done
  exec 3<&-
  t1=$EPOCHREALTIME
  echo $(( (\${t1/./} - \${t0/./}) ))
done`;

// The client's own cost in the same shell: a connect refused by the shell's own loopback (bash,
// the guest's or namespace's TCP stack, the clock; nothing relayed).
const BASELINE = `for i in $(seq ${REQUESTS}); do
  t0=$EPOCHREALTIME
  : 3<>/dev/tcp/127.0.0.1/9 2>/dev/null
  t1=$EPOCHREALTIME
  echo $(( (\${t1/./} - \${t0/./}) ))
done`;

// One download of BULK_MB through the proxy, timed in the shell (ms).
const DOWNLOAD = `t0=$EPOCHREALTIME
exec 3<>/dev/tcp/127.0.0.1/3128 || exit 1
printf 'GET http://bench.test/bulk HTTP/1.0\\r\\n\\r\\n' >&3
bytes=$(cat <&3 | wc -c)
t1=$EPOCHREALTIME
echo "$bytes $(( (\${t1/./} - \${t0/./}) / 1000 ))"`;

const spec = (shellId, runtime) => ({
  shellId,
  language: "bash",
  runtime,
  network: "internet",
  resources: RESOURCES,
  env: {},
  egress: { socketPath },
});
const request = (script) => ({
  command: ["bash", "-c", script],
  env: {},
  cwd: "/",
  stdin: undefined,
  timeoutMs: 600_000,
  maxOutputBytes: 1 << 20,
});

async function measure(label, backend, runtime) {
  const id = `bench-egress-${runtime}-${process.pid}`;
  await backend.create(spec(id, runtime));
  try {
    for (const [what, script] of [
      ["HTTP request through the proxy", CLIENT],
      ["refused connect (client's own cost)", BASELINE],
    ]) {
      const result = await backend.exec(id, request(script));
      if (result.exitCode !== 0) throw new Error(`${label}: ${result.stderr}`);
      const micros = result.stdout.trim().split("\n").map(Number);
      // The first connection pays for warming caches in the guest: left out.
      const values = micros.slice(1).map((us) => us / 1000);
      log(
        `${`${label}: ${what}`.padEnd(60)} p50 ${ms(percentile(values, 50))}  p95 ${ms(percentile(values, 95))}  (n=${values.length})`,
      );
    }
    const download = await backend.exec(id, request(DOWNLOAD));
    const [bytes, millis] = download.stdout.trim().split(" ").map(Number);
    if (download.exitCode !== 0 || bytes < BULK.length)
      throw new Error(`${label}: ${download.stderr}`);
    log(
      `${`${label}: download of ${BULK_MB} MiB`.padEnd(60)} ${millis} ms  (${((BULK_MB * 1000) / millis).toFixed(1)} MiB/s)`,
    );
  } finally {
    await backend.destroy(id);
  }
}

log(`# microvm egress relay vs container forwarder — ${new Date().toISOString()}`);
await ensureImage(IMAGES, "bash");
const container = new ContainerBackend({ stateDir: join(dir, "container"), imagesDir: IMAGES });
const microvm = new MicrovmBackend({
  stateDir: join(dir, "microvm"),
  cacheDir: MICROVM_CACHE,
  images: (language, onProgress) => ensureImage(IMAGES, language, onProgress ? { onProgress } : {}),
});
await microvm.prepare("bash", RESOURCES.memoryMb);
try {
  await measure("container (forwarder)", container, "container");
  await measure("microvm (agent relay)", microvm, "microvm");
} finally {
  await microvm.close();
  proxy.close();
  rmSync(dir, { recursive: true, force: true });
}
