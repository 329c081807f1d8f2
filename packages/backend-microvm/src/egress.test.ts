import { createServer as createHttpServer, request as httpRequest, type Server } from "node:http";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxSpec } from "@shells/sandbox";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_MEMORY_MB,
  TEST_MICROVM_DIR,
  testImages,
} from "./internal/test-support.js";
import { MicrovmBackend } from "./microvm-backend.js";

/**
 * A stand-in for the control plane's egress proxy on its unix socket, as small as the seam allows:
 * it records each connection's PROXY line, answers DNS questions (every name is 10.9.8.7), and is
 * an HTTP proxy (absolute-URI requests and CONNECT) to one loopback upstream whatever host is
 * named. The real proxy and its policy are tested through the server (test/e2e).
 */
class FakeEgressProxy {
  readonly lines: string[] = [];
  readonly #http: Server;
  #front: NetServer | null = null;

  constructor(
    readonly socketPath: string,
    upstreamPort: number,
  ) {
    this.#http = createHttpServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://invalid");
      const forwarded = httpRequest(
        { host: "127.0.0.1", port: upstreamPort, path: url.pathname, method: req.method },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forwarded.on("error", () => res.destroy());
      req.pipe(forwarded);
    });
    this.#http.on("connect", (_req, client: Socket, head: Buffer) => {
      const upstream = connect(upstreamPort, "127.0.0.1", () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        client.pipe(upstream).pipe(client);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
  }

  listen(): Promise<void> {
    this.#front = createServer((socket) => this.#accept(socket));
    return new Promise((resolve) => this.#front!.listen(this.socketPath, resolve));
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#front?.close(() => resolve()) ?? resolve());
    this.#front = null;
  }

  #accept(socket: Socket): void {
    socket.on("error", () => undefined);
    let pending = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      const end = pending.indexOf("\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      socket.pause();
      const line = pending.toString("latin1", 0, end);
      this.lines.push(line);
      const rest = pending.subarray(end + 2);
      if (line.includes(" 127.0.0.53 ") && line.endsWith(" 53")) this.#dns(socket, rest);
      else {
        if (rest.length > 0) socket.unshift(rest);
        this.#http.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  }

  /** Answers every length-prefixed DNS question with one A record, 10.9.8.7. */
  #dns(socket: Socket, first: Buffer): void {
    let pending = first;
    const answer = () => {
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const query = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + query.length);
        const header = Buffer.from(query.subarray(0, 12));
        header.writeUInt16BE(0x8180, 2); // a response, recursion available, no error
        header.writeUInt16BE(1, 6); // one answer
        header.writeUInt32BE(0, 8);
        const question = query.subarray(12);
        const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
        const message = Buffer.concat([header, question, record]);
        const framed = Buffer.alloc(2);
        framed.writeUInt16BE(message.length, 0);
        socket.write(Buffer.concat([framed, message]));
      }
    };
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      answer();
    });
    socket.resume();
    answer();
  }
}

const spec = (shellId: string, extra: Partial<SandboxSpec>): SandboxSpec => ({
  shellId,
  language: "bash",
  runtime: "microvm",
  network: "sealed",
  resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
  env: {},
  ...extra,
});

/** Bytes moved each way by the bulk test: many windows' worth (NET_WINDOW is 256 KiB). */
const BULK_BYTES = 6 * 1024 * 1024;

/** Bash that sends `request` (printf format) to host:port and prints the answer. */
const talk = (host: string, port: number | string, text: string) =>
  `exec 3<>/dev/tcp/${host}/${port} && printf '${text}' >&3 && timeout 10 cat <&3`;

/**
 * Real guests (TCG): an `internet` shell reaches a loopback upstream only through the relay to a
 * proxy socket, a sealed shell granted bindings reaches the proxy's listener alone, a sealed shell
 * without a proxy reaches nothing. ~15–30 s here (three restores).
 */
describe.skipIf(missingTools.length > 0)("microvm egress, from inside real guests", () => {
  let backend: MicrovmBackend;
  let cleanup: () => Promise<void>;
  let dir: string;
  let proxy: FakeEgressProxy;
  let upstream: Server;
  let upstreamPort: number;
  const tag = process.pid.toString(36);
  const internet = `mve-i-${tag}`;
  const bound = `mve-b-${tag}`;
  const sealed = `mve-s-${tag}`;

  beforeAll(async () => {
    dir = await mkdtemp(`${tmpdir()}/shells-microvm-egress-`);
    upstream = createHttpServer((req, res) => {
      if (req.url === "/bulk") {
        res.end(Buffer.alloc(BULK_BYTES, 0x61));
        return;
      }
      let received = 0;
      req.on("data", (chunk: Buffer) => (received += chunk.length));
      req.on("end", () => res.end(`upstream saw ${req.method} ${req.url} with ${received} bytes`));
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    upstreamPort = (upstream.address() as { port: number }).port;
    proxy = new FakeEgressProxy(`${dir}/proxy.sock`, upstreamPort);
    await proxy.listen();
    ({ backend, cleanup } = await makeTestBackend());
    const egress = { socketPath: proxy.socketPath };
    await backend.create(spec(internet, { network: "internet", egress }));
    await backend.create(spec(bound, { network: "sealed", egress }));
    await backend.create(spec(sealed, { network: "sealed" }));
  }, 180_000);
  afterAll(async () => {
    await backend?.close();
    await cleanup?.();
    await proxy?.close();
    upstream?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const sh = (shellId: string, script: string, via = backend) =>
    via.exec(shellId, request(["bash", "-c", script]));

  it("sends HTTP through the proxy the proxy variables name, with the PROXY line the host wrote", async () => {
    const before = proxy.lines.length;
    const result = await sh(
      internet,
      `echo "$HTTP_PROXY $HTTPS_PROXY $NO_PROXY"; p=\${HTTP_PROXY#http://}; ${talk("${p%:*}", "${p##*:}", "GET http://upstream.test:8080/hello HTTP/1.0\\r\\nHost: upstream.test:8080\\r\\n\\r\\n")}`,
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain(
      "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1",
    );
    expect(result.stdout).toContain("upstream saw GET /hello");
    expect(proxy.lines.slice(before)).toEqual([
      expect.stringMatching(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 3128$/),
    ]);
  });

  it("moves many windows' worth of bytes each way, in order and complete", async () => {
    const download = await sh(
      internet,
      `exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'GET http://upstream.test/bulk HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 60 cat <&3 > /tmp/bulk && tail -c ${BULK_BYTES} /tmp/bulk | tr -d a | wc -c && grep -ci '^content-length: ${BULK_BYTES}' /tmp/bulk`,
    );
    expect(download.exitCode, download.stderr).toBe(0);
    // Every byte of the body was an "a": nothing lost, nothing foreign.
    expect(download.stdout).toBe("0\n1\n");
    const upload = await sh(
      internet,
      `exec 3<>/dev/tcp/127.0.0.1/3128 && { printf 'POST http://upstream.test/upload HTTP/1.0\\r\\nContent-Length: ${BULK_BYTES}\\r\\n\\r\\n'; head -c ${BULK_BYTES} /dev/zero; } >&3 && timeout 60 cat <&3`,
    );
    expect(upload.exitCode, upload.stderr).toBe(0);
    expect(upload.stdout).toContain(`upstream saw POST /upload with ${BULK_BYTES} bytes`);
  }, 120_000);

  it("tunnels a CONNECT through the relay", async () => {
    const result = await sh(
      internet,
      `exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'CONNECT upstream.test:443 HTTP/1.1\\r\\nHost: upstream.test:443\\r\\n\\r\\n' >&3 && read -r status <&3 && read -r blank <&3 && echo "$status" && printf 'GET /tunnelled HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 10 cat <&3`,
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^HTTP\/1.1 200 Connection Established/);
    expect(result.stdout).toContain("upstream saw GET /tunnelled");
  });

  it("resolves names through the resolver at 127.0.0.53, relayed to the proxy", async () => {
    const result = await sh(internet, "cat /etc/resolv.conf; getent hosts example.test");
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain("nameserver 127.0.0.53");
    expect(result.stdout).toContain("10.9.8.7");
    expect(proxy.lines).toContainEqual(
      expect.stringMatching(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.53 \d+ 53$/),
    );
    // Over TCP too: a length-prefixed question for a.test (A, IN); the answer is 42 bytes.
    const query =
      "\\x00\\x18\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x01a\\x04test\\x00\\x00\\x01\\x00\\x01";
    const tcp = await sh(
      internet,
      `exec 3<>/dev/tcp/127.0.0.53/53 && printf '${query}' >&3 && timeout 10 head -c 42 <&3 | od -An -tx1 | tr -d ' \\n'`,
    );
    expect(tcp.exitCode, tcp.stderr).toBe(0);
    expect(tcp.stdout).toMatch(/^00281234/);
    expect(tcp.stdout).toMatch(/0a090807$/);
  });

  it("redirects any address's ports 80 and 443 to the proxy, naming the address the client dialled", async () => {
    const before = proxy.lines.length;
    const http = await sh(
      internet,
      talk("93.184.216.34", 80, "GET /direct HTTP/1.0\\r\\nHost: example.test\\r\\n\\r\\n"),
    );
    expect(http.exitCode, http.stderr).toBe(0);
    expect(http.stdout).toContain("upstream saw GET /direct");
    const https = await sh(internet, talk("1.1.1.1", 443, "GET /secure HTTP/1.0\\r\\n\\r\\n"));
    expect(https.exitCode, https.stderr).toBe(0);
    expect(https.stdout).toContain("upstream saw GET /secure");
    expect(proxy.lines.slice(before)).toEqual([
      expect.stringMatching(/^PROXY TCP4 127\.0\.0\.1 93\.184\.216\.34 \d+ 80$/),
      expect.stringMatching(/^PROXY TCP4 127\.0\.0\.1 1\.1\.1\.1 \d+ 443$/),
    ]);
    // The guest's own loopback on port 80 is the agent's listener too, but no way out: the host
    // refuses the stream, and the client reads nothing.
    // (The client writes nothing: a write racing the close could end it with SIGPIPE instead.)
    const local = await sh(internet, "exec 3<>/dev/tcp/127.0.0.1/80 && timeout 10 cat <&3");
    expect(local.stdout).toBe("");
    expect(local.exitCode, "the client must see the end at once, not time out").toBe(0);
    expect(proxy.lines.slice(before)).toHaveLength(2);
  });

  it("reaches no other address or port: not the host's upstream, not another address's other ports", async () => {
    for (const [host, port] of [
      ["127.0.0.1", upstreamPort],
      ["10.0.0.1", 8080],
      ["1.1.1.1", 22],
      ["127.0.0.1", 3129],
    ] as const) {
      const result = await sh(internet, `timeout 10 bash -c 'exec 3<>/dev/tcp/${host}/${port}'`);
      expect(result.exitCode, `${host}:${port}`).not.toBe(0);
      expect(result.exitCode, `${host}:${port} must fail at once, not time out`).not.toBe(124);
    }
  });

  it("gives a sealed shell granted bindings the proxy's listener and nothing else", async () => {
    const before = proxy.lines.length;
    const result = await sh(bound, talk("127.0.0.1", 3128, "GET /bindings/x HTTP/1.0\\r\\n\\r\\n"));
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain("upstream saw GET /bindings/x");
    expect(proxy.lines.slice(before)).toEqual([
      expect.stringMatching(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 3128$/),
    ]);
    // No resolver, no proxy variables, no other way out.
    const env = await sh(bound, 'echo "[$HTTP_PROXY]"; timeout 5 getent hosts example.test');
    expect(env.stdout).toContain("[]");
    expect(env.exitCode).not.toBe(0);
    const dns = await sh(bound, "timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.53/53'");
    expect(dns.exitCode).not.toBe(0);
    // No transparent ports either: another address is unreachable, and loopback's port 80 closed.
    for (const host of ["93.184.216.34", "127.0.0.1"]) {
      const direct = await sh(bound, `timeout 5 bash -c 'exec 3<>/dev/tcp/${host}/80'`);
      expect(direct.exitCode, host).not.toBe(0);
      expect(direct.exitCode, `${host} must fail at once`).not.toBe(124);
    }
    expect(proxy.lines.slice(before)).toHaveLength(1);
  });

  it("reaches nothing from a sealed shell without a proxy, not even 127.0.0.1:3128 or port 80", async () => {
    for (const [host, port] of [
      ["127.0.0.1", 3128],
      ["93.184.216.34", 80],
      ["127.0.0.1", 443],
    ] as const) {
      const result = await sh(sealed, `timeout 5 bash -c 'exec 3<>/dev/tcp/${host}/${port}'`);
      expect(result.exitCode, `${host}:${port}`).not.toBe(0);
      expect(result.exitCode, `${host}:${port}`).not.toBe(124);
    }
  });

  it("follows the proxy as it goes and comes back, and after a control-plane restart", async () => {
    const get = talk("127.0.0.1", 3128, "GET http://upstream.test/again HTTP/1.0\\r\\n\\r\\n");
    await proxy.close();
    const gone = await sh(internet, get);
    expect(gone.stdout).not.toContain("upstream saw");
    await proxy.listen();
    expect((await sh(internet, get)).stdout).toContain("upstream saw GET /again");
    // A new backend on the same state reconnects to the running guest and relays again.
    await backend.close();
    const stateDir = dirname(dirname(backend.shellDirOf(internet)));
    const adopted = new MicrovmBackend({
      stateDir,
      cacheDir: TEST_MICROVM_DIR,
      images: testImages,
    });
    try {
      expect((await sh(internet, get, adopted)).stdout).toContain("upstream saw GET /again");
    } finally {
      await adopted.close();
    }
  });
});
