import type { OrgEgressPolicy } from "@shells/contract";
import { mkdtempSync, rmSync } from "node:fs";
import type { IncomingHttpHeaders } from "node:http";
import { createServer, type Server } from "node:https";
import { connect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { makeTestCa, type TestCa } from "../test-support/test-ca.js";
import { parseInjectTemplate, parseUpstream } from "./binding-policy.js";
import { BindingProxy, type BindingTarget } from "./binding-proxy.js";
import type { LoggedDecision } from "./decision-log.js";
import { EgressProxy } from "./egress-proxy.js";
import { EgressPolicy } from "./policy.js";

// The binding gateway behind a shell's forwarder, driven as the forwarder drives it (a PROXY line
// naming the proxy listener, then the shell's request), in front of a real HTTPS upstream whose
// certificate comes from a test CA that only the gateway is told to trust.

const SECRET = "sk_test_5f0c9a1e7b3d44c2a8e6";
const ORG: OrgEgressPolicy = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: ["127.0.0.1/32"],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
  maxRequestsPerSecond: 1000,
  maxConnections: 16,
  maxBytes: 1 << 30,
};
const PROXY_LINE = "PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128\r\n";

let ca: TestCa;
let upstream: Server;
let upstreamPort = 0;
let seen: { method: string; url: string; headers: IncomingHttpHeaders }[];

beforeAll(async () => {
  ca = makeTestCa(["api.test", "127.0.0.1"]);
  upstream = createServer({ cert: ca.cert, key: ca.key }, (req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    const auth = req.headers.authorization ?? "";
    switch (req.url?.split("?")[0]) {
      case "/v1/echo":
        res.writeHead(auth === `Bearer ${SECRET}` ? 200 : 401, { "content-type": "text/plain" });
        res.end(`${auth === `Bearer ${SECRET}` ? "authorized" : "unauthorized"} ${req.url}`);
        return;
      case "/v1/reflect":
        res.writeHead(200, { "x-echo": auth, "x-fine": "kept", "content-type": "text/plain" });
        res.end(`you sent ${auth}; key=${encodeURIComponent(SECRET)}`);
        return;
      case "/v1/reflect-gzip":
        res.writeHead(200, { "content-encoding": "gzip", "content-type": "text/plain" });
        res.end(gzipSync(`gzipped ${auth}`));
        return;
      case "/v1/odd-coding":
        res.writeHead(200, { "content-encoding": "zstd" });
        res.end("?");
        return;
      case "/v1/redirect":
        res.writeHead(302, { location: "https://other.test/steal" });
        res.end();
        return;
      default:
        res.writeHead(404);
        res.end();
    }
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  upstreamPort = (upstream.address() as AddressInfo).port;
});

afterAll(() => {
  upstream?.close();
});

let dir: string;
let proxy: EgressProxy;
let socketPath: string;
let decisions: LoggedDecision[];
let lookups: string[];
let org: OrgEgressPolicy;
let extraCa: string[];

function target(upstreamUrl: string): BindingTarget {
  return {
    rules: {
      upstream: parseUpstream(upstreamUrl, { allowHttp: false }),
      inject: parseInjectTemplate("Authorization: Bearer {secret}"),
      paths: ["/v1/*"],
      methods: ["GET"],
    },
    secret: SECRET,
  };
}

async function startProxy(): Promise<void> {
  proxy = new EgressProxy({
    orgId: "org",
    shellId: "shl",
    socketPath,
    policy: () =>
      Promise.resolve(new EgressPolicy({ org, shell: { mode: "deny_all", allow: [] } })),
    resolve: (host) => {
      lookups.push(host);
      return Promise.resolve(["127.0.0.1"]);
    },
    maxConnections: 16,
    maxBytes: 1 << 30,
    maxRequestsPerSecond: 1000,
    record: () => undefined,
    bindings: new BindingProxy({
      orgId: "org",
      shellId: "shl",
      grants: () => [
        { id: "bnd-api", name: "api" },
        { id: "bnd-gone", name: "gone" },
      ],
      lookup: (id) =>
        Promise.resolve(id === "bnd-api" ? target(`https://api.test:${upstreamPort}`) : null),
      policy: () => Promise.resolve(new EgressPolicy({ org })),
      resolve: (host) => {
        lookups.push(host);
        return Promise.resolve(["127.0.0.1"]);
      },
      extraCa,
      record: (decision) => decisions.push(decision),
    }),
  });
  await proxy.listen();
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "binding-proxy-"));
  socketPath = join(dir, "proxy.sock");
  seen = [];
  decisions = [];
  lookups = [];
  org = ORG;
  extraCa = [ca.caCert];
  await startProxy();
});

afterEach(async () => {
  await proxy.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends one request over a forwarder connection to the proxy listener; reads the whole answer. */
function request(
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      const raw = Buffer.concat(chunks).toString("latin1");
      const [head = "", ...rest] = raw.split("\r\n\r\n");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const parsed = Object.fromEntries(
        lines.map((l) => [
          l.slice(0, l.indexOf(":")).toLowerCase(),
          l.slice(l.indexOf(":") + 1).trim(),
        ]),
      );
      let body = rest.join("\r\n\r\n");
      if (parsed["transfer-encoding"] === "chunked") {
        let out = "";
        for (let at = 0; ;) {
          const end = body.indexOf("\r\n", at);
          const size = parseInt(body.slice(at, end), 16);
          if (!size) break;
          out += body.slice(end + 2, end + 2 + size);
          at = end + 2 + size + 2;
        }
        body = out;
      }
      resolve({ status: Number(statusLine.split(" ")[1]), headers: parsed, body });
    });
    const lines = [`${method} ${target} HTTP/1.1`, "host: 127.0.0.1:3128", "connection: close"];
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
    socket.write(`${PROXY_LINE}${lines.join("\r\n")}\r\n\r\n`);
  });
}

describe("the binding gateway", () => {
  it("injects the secret, replaces the shell's own header and forwards over TLS to the upstream", async () => {
    const answer = await request("GET", "/bindings/api/v1/echo?x=1", {
      authorization: "Bearer forged-by-the-shell",
    });
    expect(answer).toMatchObject({ status: 200, body: "authorized /v1/echo?x=1" });
    expect(seen).toHaveLength(1);
    expect(seen[0]?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(seen[0]?.headers.host).toBe(`api.test:${upstreamPort}`);
    expect(seen[0]?.headers["accept-encoding"]).toBe("identity");
    // A client that sent the binding URL through its proxy variables (absolute form) gets the same.
    const viaProxyVariables = await request("GET", "http://127.0.0.1:3128/bindings/api/v1/echo");
    expect(viaProxyVariables).toMatchObject({ status: 200, body: "authorized /v1/echo" });
    expect(lookups).toEqual(["api.test", "api.test"]);
    expect(decisions.map((d) => [d.action, d.details])).toEqual([
      ["binding.invoked", { binding: "api", method: "GET", path: "/v1/echo", status: 200 }],
      ["binding.invoked", { binding: "api", method: "GET", path: "/v1/echo", status: 200 }],
    ]);
    expect(decisions[0]?.bytes).toBeGreaterThan(0);
  });

  it("drops response headers that hold the secret and masks it in bodies, plain and gzipped", async () => {
    const plain = await request("GET", "/bindings/api/v1/reflect");
    expect(plain.status).toBe(200);
    expect(plain.headers["x-echo"]).toBeUndefined();
    expect(plain.headers["x-fine"]).toBe("kept");
    expect(plain.body).toBe("you sent [redacted]; key=[redacted]");
    const gzipped = await request("GET", "/bindings/api/v1/reflect-gzip");
    expect(gzipped.status).toBe(200);
    expect(gzipped.headers["content-encoding"]).toBeUndefined();
    expect(gzipped.body).toBe("gzipped [redacted]");
    const odd = await request("GET", "/bindings/api/v1/odd-coding");
    expect(odd.status).toBe(502);
    expect(odd.body).toBe("binding denied: response_encoding\n");
    // Calls are recorded once their upstream connection closes; the refused one at once.
    await expect.poll(() => decisions.length).toBe(3);
    await new Promise((r) => setTimeout(r, 100));
    const recorded = decisions.map((d) => [d.action, d.details.path, d.details.reason ?? null]);
    expect(recorded.sort((a, b) => String(a[1]).localeCompare(String(b[1])))).toEqual([
      ["binding.denied", "/v1/odd-coding", "response_encoding"],
      ["binding.invoked", "/v1/reflect", null],
      ["binding.invoked", "/v1/reflect-gzip", null],
    ]);
    for (const answer of [plain, gzipped, odd])
      expect(JSON.stringify(answer)).not.toContain(SECRET);
  });

  it("answers a redirect as it is and never follows it", async () => {
    const answer = await request("GET", "/bindings/api/v1/redirect");
    expect(answer.status).toBe(302);
    expect(answer.headers.location).toBe("https://other.test/steal");
    expect(seen.map((s) => s.url)).toEqual(["/v1/redirect"]);
    expect(lookups).toEqual(["api.test"]);
  });

  it("refuses what the binding does not allow before anything reaches the upstream, and says why", async () => {
    const refusals = {
      other: await request("GET", "/bindings/other/v1/echo"),
      gone: await request("GET", "/bindings/gone/v1/echo"),
      post: await request("POST", "/bindings/api/v1/echo"),
      path: await request("GET", "/bindings/api/admin"),
      deep: await request("GET", "/bindings/api/v1/echo/more"),
      dots: await request("GET", "/bindings/api/v1/../admin"),
      encoded: await request("GET", "/bindings/api/v1/%2e%2e/admin"),
      slash: await request("GET", "/bindings/api/v1%2fadmin"),
      elsewhere: await request("GET", "/somewhere"),
    };
    expect(
      Object.fromEntries(Object.entries(refusals).map(([k, a]) => [k, [a.status, a.body]])),
    ).toEqual({
      other: [403, "binding denied: not_granted\n"],
      gone: [403, "binding denied: binding_deleted\n"],
      post: [403, "binding denied: method_not_allowed\n"],
      path: [403, "binding denied: path_not_allowed\n"],
      deep: [403, "binding denied: path_not_allowed\n"],
      dots: [400, "binding denied: path_invalid\n"],
      encoded: [400, "binding denied: path_invalid\n"],
      slash: [400, "binding denied: path_invalid\n"],
      elsewhere: [
        400,
        "egress proxy: send absolute http:// URLs, CONNECT for https, or call a binding URL (/bindings/<name>/)\n",
      ],
    });
    expect(refusals.other.headers["x-shells-binding"]).toBe("denied");
    expect(seen).toEqual([]);
    expect(lookups).toEqual([]);
    expect(decisions.map((d) => [d.action, d.details.binding, d.details.reason])).toEqual([
      ["binding.denied", "other", "not_granted"],
      ["binding.denied", "gone", "binding_deleted"],
      ["binding.denied", "api", "method_not_allowed"],
      ["binding.denied", "api", "path_not_allowed"],
      ["binding.denied", "api", "path_not_allowed"],
      ["binding.denied", "api", "path_invalid"],
      ["binding.denied", "api", "path_invalid"],
      ["binding.denied", "api", "path_invalid"],
    ]);
  });

  it("sends nothing to an upstream the org's rules refuse, or whose certificate it cannot verify", async () => {
    await proxy.close();
    org = { ...ORG, allowCidrs: [] };
    await startProxy();
    const notPublic = await request("GET", "/bindings/api/v1/echo");
    expect([notPublic.status, notPublic.body]).toEqual([
      403,
      "binding denied: address_not_public\n",
    ]);

    await proxy.close();
    org = ORG;
    extraCa = [];
    await startProxy();
    const untrusted = await request("GET", "/bindings/api/v1/echo");
    expect(untrusted.status).toBe(502);
    expect(seen).toEqual([]);
  });
});
