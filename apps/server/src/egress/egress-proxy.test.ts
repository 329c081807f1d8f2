import type { OrgEgressPolicy } from "@shells/contract";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { getThroughProxy } from "../test-support/egress-link.js";
import type { EgressDecision } from "./decision-log.js";
import { EgressProxy, parseProxyLine } from "./egress-proxy.js";
import { EgressPolicy } from "./policy.js";

// The proxy's side of the forwarder link, driven as the forwarder drives it: a PROXY line, then
// the shell's bytes. Upstreams listen on loopback, which the org policy here opens explicitly.

const ORG: OrgEgressPolicy = {
  allowHosts: [],
  denyHosts: ["denied.test"],
  allowCidrs: ["127.0.0.1/32"],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
  maxRequestsPerSecond: 1000,
  maxConnections: 16,
  maxBytes: 1 << 30,
};

let dir: string;
let proxy: EgressProxy;
let socketPath: string;
let lookups: string[];
let decisions: EgressDecision[];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "egress-proxy-"));
  socketPath = join(dir, "proxy.sock");
  lookups = [];
  decisions = [];
  proxy = new EgressProxy({
    orgId: "org",
    shellId: "shl",
    socketPath,
    policy: () =>
      Promise.resolve(
        new EgressPolicy({
          org: ORG,
          shell: { mode: "allowlist", allow: ["ok.test", "tls.test"] },
        }),
      ),
    resolve: (host) => {
      lookups.push(host);
      return Promise.resolve(["127.0.0.1"]);
    },
    maxConnections: 16,
    maxBytes: 1 << 30,
    maxRequestsPerSecond: 1000,
    record: (decision) => decisions.push(decision),
  });
  await proxy.listen();
});

afterEach(async () => {
  await proxy.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Sends `bytes` over a forwarder connection and returns everything the proxy answers. */
function exchange(bytes: Buffer, halfClose = true): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(Buffer.concat(chunks)));
    socket.write(bytes);
    if (halfClose) socket.end();
  });
}

function dnsQuery(name: string, type = 1): Buffer {
  const labels = name
    .split(".")
    .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  const message = Buffer.concat([head, ...labels, Buffer.from([0, 0, type, 0, 1])]);
  return Buffer.concat([Buffer.from([message.length >> 8, message.length & 0xff]), message]);
}

const DNS_LINE = "PROXY TCP4 127.0.0.1 127.0.0.53 40000 53\r\n";

describe("the egress proxy's forwarder link", () => {
  it("reads the PROXY line and refuses a connection without one", async () => {
    expect(parseProxyLine("PROXY TCP4 127.0.0.1 192.0.2.1 1234 443")).toEqual({
      source: "127.0.0.1",
      destination: "192.0.2.1",
      destinationPort: 443,
    });
    expect(parseProxyLine("PROXY TCP4 ::1 192.0.2.1 1234 443")).toBeNull();
    expect(parseProxyLine("PROXY UNKNOWN")).toBeNull();
    const answer = await exchange(
      Buffer.from("GET http://ok.test/ HTTP/1.1\r\nhost: ok.test\r\n\r\n"),
    );
    expect(answer.length).toBe(0);
    expect(lookups).toEqual([]);
  });

  it("answers DNS with vetted addresses, and never looks up a name the policy refuses", async () => {
    const answer = await exchange(
      Buffer.concat([
        Buffer.from(DNS_LINE),
        dnsQuery("ok.test"),
        dnsQuery("denied.test"),
        dnsQuery("elsewhere.test"),
        dnsQuery("ok.test", 16),
      ]),
    );
    const messages: Buffer[] = [];
    for (let at = 0; at < answer.length;) {
      const length = answer.readUInt16BE(at);
      messages.push(answer.subarray(at + 2, at + 2 + length));
      at += 2 + length;
    }
    const rcodes = messages.map((m) => (m[3] as number) & 0xf);
    expect(rcodes).toEqual([0, 5, 5, 5]); // NOERROR, REFUSED (org deny), REFUSED (not listed), REFUSED (TXT)
    expect([...(messages[0] as Buffer).subarray(-4)]).toEqual([127, 0, 0, 1]);
    expect(lookups).toEqual(["ok.test"]);
    expect(decisions.map((d) => [d.protocol, d.host, d.allowed, d.reason ?? null])).toEqual([
      ["dns", "ok.test", true, null],
      ["dns", "denied.test", false, "host_denied"],
      ["dns", "elsewhere.test", false, "not_in_shell_allowlist"],
    ]);
  });

  it("decides a redirected TLS connection on its SNI, and refuses one without", async () => {
    // (Relaying an allowed one to a real upstream on port 443 is shown from a real shell in
    // test/e2e/egress.e2e.test.ts.)
    const hello = await new Promise<Buffer>((resolve) => {
      const capture = createServer((socket) => socket.once("data", (d: Buffer) => resolve(d)));
      capture.listen(0, "127.0.0.1", () => {
        const client = tlsConnect({
          host: "127.0.0.1",
          port: (capture.address() as AddressInfo).port,
          servername: "tls.test",
        });
        client.on("error", () => undefined);
        setTimeout(() => {
          client.destroy();
          capture.close();
        }, 200);
      });
    });
    const refused = await exchange(
      Buffer.concat([
        Buffer.from("PROXY TCP4 127.0.0.1 192.0.2.1 40000 443\r\n"),
        Buffer.from("not tls"),
      ]),
    );
    expect(refused.length).toBe(0);
    expect(decisions.at(-1)).toMatchObject({
      protocol: "tls",
      allowed: false,
      reason: "no_server_name",
    });
    const denied = Buffer.from(hello.toString("latin1").replace("tls.test", "bad.test"), "latin1");
    expect(
      (
        await exchange(
          Buffer.concat([Buffer.from("PROXY TCP4 127.0.0.1 192.0.2.1 40000 443\r\n"), denied]),
        )
      ).length,
    ).toBe(0);
    expect(decisions.at(-1)).toMatchObject({
      protocol: "tls",
      host: "bad.test",
      allowed: false,
      reason: "not_in_shell_allowlist",
    });
    expect(lookups).toEqual([]);
  });
});

describe("the egress proxy over IPv6", () => {
  /** The DNS messages of a length-prefixed answer stream. */
  function messagesOf(answer: Buffer): Buffer[] {
    const messages: Buffer[] = [];
    for (let at = 0; at < answer.length;) {
      const length = answer.readUInt16BE(at);
      messages.push(answer.subarray(at + 2, at + 2 + length));
      at += 2 + length;
    }
    return messages;
  }

  it("answers AAAA with vetted IPv6 addresses, refuses non-public ones, and dials the one it vetted", async () => {
    const v6Decisions: EgressDecision[] = [];
    const upstream = createHttpServer((_req, res) => res.end("over v6"));
    await new Promise<void>((resolve) => upstream.listen(0, "::1", resolve));
    const port = (upstream.address() as AddressInfo).port;
    const names: Record<string, string[]> = {
      "v6.test": ["::1"],
      "metadata.test": ["fd00:ec2::254"],
      "ula.test": ["fd12:3456::1"],
      "link.test": ["fe80::1"],
      "mapped.test": ["::ffff:169.254.169.254"],
      "mixed.test": ["::1", "fd00:ec2::254"],
    };
    const v6Socket = join(dir, "v6.sock");
    const v6 = new EgressProxy({
      orgId: "org",
      shellId: "shl-v6",
      socketPath: v6Socket,
      // The org opens IPv6 loopback only (the upstream here), nothing else non-public.
      policy: () => Promise.resolve(new EgressPolicy({ org: { ...ORG, allowCidrs: ["::1/128"] } })),
      resolve: (host) => Promise.resolve(names[host] ?? []),
      maxConnections: 16,
      maxBytes: 1 << 30,
      maxRequestsPerSecond: 1000,
      record: (decision) => v6Decisions.push(decision),
    });
    await v6.listen();
    try {
      const ask = (bytes: Buffer) =>
        new Promise<Buffer>((resolve) => {
          const socket = connect(v6Socket);
          const chunks: Buffer[] = [];
          socket.on("data", (chunk: Buffer) => chunks.push(chunk));
          socket.on("error", () => undefined);
          socket.on("close", () => resolve(Buffer.concat(chunks)));
          socket.end(bytes);
        });
      const AAAA = 28;
      const messages = messagesOf(
        await ask(
          Buffer.concat([
            Buffer.from(DNS_LINE),
            ...[
              "v6.test",
              "metadata.test",
              "ula.test",
              "link.test",
              "mapped.test",
              "mixed.test",
            ].map((name) => dnsQuery(name, AAAA)),
            dnsQuery("v6.test", 1),
          ]),
        ),
      );
      // NOERROR with ::1; REFUSED for every non-public address (a name with any is refused whole);
      // an A question for a name with IPv6 addresses only: NOERROR, no records.
      expect(messages.map((m) => (m[3] as number) & 0xf)).toEqual([0, 5, 5, 5, 5, 5, 0]);
      expect(messages.map((m) => m.readUInt16BE(6))).toEqual([1, 0, 0, 0, 0, 0, 0]);
      expect([...(messages[0] as Buffer).subarray(-16)]).toEqual([...Array(15).fill(0), 1]);
      expect(v6Decisions.map((d) => [d.host, d.allowed, d.reason ?? null])).toEqual([
        ["v6.test", true, null],
        ["metadata.test", false, "address_not_public"],
        ["ula.test", false, "address_not_public"],
        ["link.test", false, "address_not_public"],
        ["mapped.test", false, "address_not_public"],
        ["mixed.test", false, "address_not_public"],
        ["v6.test", true, null],
      ]);
      expect(await getThroughProxy(v6Socket, `http://v6.test:${port}/`)).toEqual({
        status: 200,
        body: "over v6",
      });
      expect(v6Decisions.at(-1)).toMatchObject({ host: "v6.test", address: "::1", allowed: true });
      expect(await getThroughProxy(v6Socket, `http://[fd00:ec2::254]:${port}/`)).toEqual({
        status: 403,
        body: "egress denied: address_not_public\n",
      });
    } finally {
      await v6.close();
      upstream.close();
    }
  });
});
