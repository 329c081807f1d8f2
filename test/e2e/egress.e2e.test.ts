import { loadConfig, openSqliteStore, startServer, type RunningServer } from "@shells/server";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { addKey } from "../../apps/server/src/test-support/test-app.js";
import { call } from "./harness.js";

// The `internet` mode through a real container shell: its only way out is its egress proxy. The
// upstream servers listen on the host's loopback, which a shell cannot reach by itself; the org's
// policy opens 127.0.0.1/32 explicitly, and the proxy resolves the test names from a fixed map.

const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const WINDOW_SECONDS = 6;

interface Api {
  url: string;
  token: string;
}

async function listen(server: HttpServer | Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

/** Addresses of this host other than loopback (what a shell must not reach by IP literal). */
function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i && !i.internal && !i.address.startsWith("fe80"))
    .map((i) => i!.address);
}

interface EgressEvent {
  action: string;
  outcome: string;
  details: {
    host: string;
    address: string | null;
    port: number;
    protocol: string;
    bytes: number;
    count: number;
    reason?: string;
  };
}

describe.runIf(hostReport.available)("internet shells through the egress proxy", () => {
  let server: RunningServer;
  let config: ReturnType<typeof loadConfig> & { egressTestHosts: Record<string, string[]> };
  let api: Api;
  let dataDir: string;
  let upstream: HttpServer;
  let echo: Server;
  let httpPort = 0;
  let echoPort = 0;
  let shellId = "";
  // Upstreams on ports 80 and 443 at a loopback address of their own: the shell dials them without
  // the proxy, and the redirect brings the connection to the proxy, which decides on Host / SNI.
  const webAddress = `127.${2 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;
  let web: HttpServer;
  let tlsUpstream: Server;

  const exec = async (script: string, shell = shellId) => {
    const res = await call<{ exitCode: number; stdout: string; stderr: string }>(
      api,
      "POST",
      `/api/v1/shells/${shell}/exec`,
      { command: ["python3", "-c", script], timeoutMs: 60_000 },
    );
    expect(res.status).toBe(200);
    return res.body;
  };
  /** Each URL's status (or [status, body] when refused) and whether `dnsHost` resolves, seen from
   * inside `shell` with the proxy variables kept and NO_PROXY dropped (127.0.0.1 is the host's). */
  const probeEgress = async (shell: string, urls: string[], dnsHost: string) => {
    const result = await exec(
      `
import json, os, socket, urllib.request, urllib.error
for name in ["NO_PROXY", "no_proxy"]:
    os.environ.pop(name, None)
out = {}
for url in ${JSON.stringify(urls)}:
    try:
        out[url] = urllib.request.urlopen(url, timeout=20).status
    except urllib.error.HTTPError as e:
        out[url] = [e.code, e.read().decode().strip()]
    except urllib.error.URLError as e:
        out[url] = str(e.reason)
try:
    socket.getaddrinfo(${JSON.stringify(dnsHost)}, 80, proto=socket.IPPROTO_TCP)
    out["dns"] = "resolved"
except socket.gaierror:
    out["dns"] = "refused"
print(json.dumps(out))
`,
      shell,
    );
    expect(result.stderr).toBe("");
    return JSON.parse(result.stdout) as Record<string, unknown>;
  };
  const egressEvents = async () =>
    (
      await call<{ items: EgressEvent[] }>(
        api,
        "GET",
        `/api/v1/activity?shell=${shellId}&action=egress.&limit=500`,
      )
    ).body.items;

  beforeAll(async () => {
    upstream = createHttpServer((req, res) => {
      res.end(`hello from upstream ${req.url} host=${req.headers.host}`);
    });
    httpPort = await listen(upstream);
    echo = createTcpServer((socket) => socket.pipe(socket));
    echoPort = await listen(echo);
    web = createHttpServer((req, res) => {
      res.end(`hello from web ${req.url} host=${req.headers.host}`);
    });
    await new Promise<void>((resolve) => web.listen(80, webAddress, resolve));
    // Stands in for a TLS server: answers once it has a ClientHello naming web.test (the bytes
    // arrive untouched: the proxy relays, it does not terminate TLS).
    tlsUpstream = createTcpServer((socket) => {
      let seen = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        if (seen[0] === 22 && seen.includes("web.test"))
          socket.end(`tls upstream saw a ClientHello for web.test`);
      });
      socket.on("error", () => socket.destroy());
    });
    await new Promise<void>((resolve) => tlsUpstream.listen(443, webAddress, resolve));
    dataDir = mkdtempSync(join(tmpdir(), "shells-egress-"));
    const loaded = loadConfig(
      ["--port", "0", "--data-dir", dataDir, "--backend", "container", "--log-level", "warn"],
      {
        SHELLS_VALIDATE_RESPONSES: "1",
        SHELLS_IMAGES_DIR: IMAGES,
        SHELLS_EGRESS_DECISION_WINDOW_SECONDS: String(WINDOW_SECONDS),
      },
    );
    config = {
      ...loaded,
      egressTestHosts: {
        "allowed.test": ["127.0.0.1"],
        "loop.test": ["127.0.0.1"],
        "denied.test": ["127.0.0.1"],
        "private.test": ["10.1.2.3"],
        "metadata.test": ["169.254.169.254"],
        "mapped.test": ["::ffff:127.0.0.2"],
        "web.test": [webAddress],
        "webdeny.test": [webAddress],
      },
    };
    server = await startServer(config);
    api = { url: server.url, token: readFileSync(join(dataDir, "admin-token"), "utf8").trim() };
    const policy = await call(api, "PATCH", "/api/v1/org/policy", {
      egress: { allowCidrs: ["127.0.0.1/32", `${webAddress}/32`], denyHosts: ["denied.test"] },
    });
    expect(policy.status).toBe(200);
    const shell = await call<{ id: string; network: string; status: string }>(
      api,
      "POST",
      "/api/v1/shells",
      {
        language: "python",
        egress: {
          mode: "allowlist",
          allow: [
            "allowed.test",
            "loop.test",
            "denied.test",
            "private.test",
            "metadata.test",
            "mapped.test",
            "web.test",
          ],
        },
      },
    );
    expect(shell.status).toBe(201);
    expect(shell.body).toMatchObject({ network: "internet", status: "running" });
    shellId = shell.body.id;
  }, 120_000);

  afterAll(async () => {
    if (api && shellId) await call(api, "DELETE", `/api/v1/shells/${shellId}`);
    await server?.close();
    upstream?.close();
    echo?.close();
    web?.close();
    tlsUpstream?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("reaches an allowed host over HTTP and through a CONNECT tunnel, with no setup in the shell", async () => {
    const result = await exec(`
import http.client, json, os, urllib.request
out = {"proxy": os.environ.get("HTTP_PROXY")}
out["http"] = urllib.request.urlopen("http://allowed.test:${httpPort}/hello?x=1", timeout=20).read().decode()
tunnel = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
tunnel.set_tunnel("allowed.test", ${echoPort})
tunnel.connect()
tunnel.sock.sendall(b"ping through the tunnel")
out["echo"] = tunnel.sock.recv(100).decode()
print(json.dumps(out))
`);
    expect(result.stderr).toBe("");
    expect(JSON.parse(result.stdout)).toEqual({
      proxy: "http://127.0.0.1:3128",
      http: `hello from upstream /hello?x=1 host=allowed.test:${httpPort}`,
      echo: "ping through the tunnel",
    });
  });

  it("refuses what the policy does not allow with 403, and records why", async () => {
    const result = await exec(`
import http.client, json, urllib.request, urllib.error
out = {}
for name in ["denied.test", "private.test", "metadata.test", "mapped.test", "unlisted.test", "127.0.0.2"]:
    try:
        urllib.request.urlopen(f"http://{name}:${httpPort}/", timeout=20)
        out[name] = "reached"
    except urllib.error.HTTPError as e:
        out[name] = e.code
tunnel = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
tunnel.set_tunnel("private.test", 443)
try:
    tunnel.connect()
    out["connect"] = "open"
except OSError as e:
    out["connect"] = str(e)
print(json.dumps(out))
`);
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    for (const name of [
      "denied.test",
      "private.test",
      "metadata.test",
      "mapped.test",
      "unlisted.test",
      "127.0.0.2",
    ])
      expect(out[name], name).toBe(403);
    expect(String(out.connect)).toContain("403");
    const reasons = Object.fromEntries(
      (await egressEvents())
        .filter((e) => e.action === "egress.denied")
        .map((e) => [`${e.details.protocol} ${e.details.host}`, e.details.reason]),
    );
    expect(reasons).toMatchObject({
      "http denied.test": "host_denied",
      "http private.test": "address_not_public",
      "http metadata.test": "address_not_public",
      "http mapped.test": "address_not_public",
      "http unlisted.test": "not_in_shell_allowlist",
      "http 127.0.0.2": "not_in_shell_allowlist",
      "connect private.test": "address_not_public",
    });
  });

  it("has no route but the proxy: IP literals, UDP, IPv6 and raw sockets all fail", async () => {
    const targets = [...hostAddresses(), "169.254.169.254", "fd00:ec2::254", "10.0.0.1", "1.1.1.1"];
    const result = await exec(`
import json, socket
out = {}
for address in ${JSON.stringify(targets)}:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.settimeout(3)
    try:
        tcp.connect((address, ${httpPort}))
        out["tcp " + address] = "connected"
    except OSError as e:
        out["tcp " + address] = e.errno
    udp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        udp.sendto(b"x", (address, 9))
        out["udp " + address] = "sent"
    except OSError as e:
        out["udp " + address] = e.errno
# the upstream listens on the host's loopback; the shell's loopback is its own
local = socket.socket()
try:
    local.connect(("127.0.0.1", ${httpPort}))
    out["loopback"] = "connected"
except OSError as e:
    out["loopback"] = e.errno
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    out["raw"] = "opened"
except OSError as e:
    out["raw"] = e.errno
# no capability to change the namespace's routes or nftables rules
out["capabilities"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
print(json.dumps(out))
`);
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(out.capabilities).toBe("0000000000000000");
    delete out.capabilities;
    expect(Object.keys(out).length).toBe(targets.length * 2 + 2);
    for (const [probe, outcome] of Object.entries(out)) {
      expect(typeof outcome, `${probe}: ${String(outcome)}`).toBe("number");
    }
    expect(out.loopback).toBe(111); // ECONNREFUSED: nothing of the host listens in the shell
    expect(out.raw).toBe(1); // EPERM: no CAP_NET_RAW
  });

  it("answers DNS in the shell from the proxy: allowed names get vetted addresses, refused ones are never looked up", async () => {
    const result = await exec(`
import json, socket, struct
out = {"resolv": open("/etc/resolv.conf").read()}
def lookup(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})
    except socket.gaierror as e:
        return "gaierror %d" % e.errno
for name in ["web.test", "webdeny.test", "unlisted.test", "private.test"]:
    out[name] = lookup(name)
def query(name, qtype):
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack("!HH", qtype, 1)
    return q
def rcode_and_count(answer):
    return [answer[3] & 0xF, struct.unpack("!H", answer[6:8])[0]]
# a client that ignores resolv.conf and asks some other server: steered to the same resolver
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(10)
udp.sendto(query("web.test", 1), ("8.8.8.8", 53))
out["udp elsewhere"] = rcode_and_count(udp.recvfrom(512)[0])
# A and AAAA back to back from one socket, as getaddrinfo asks: both answered
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.settimeout(2)
u2.sendto(query("web.test", 1), ("127.0.0.53", 53))
u2.sendto(query("web.test", 28), ("127.0.0.53", 53))
got = []
try:
    for i in range(2):
        got.append(rcode_and_count(u2.recvfrom(512)[0]))
except Exception as e:
    got.append(str(e))
out["pair"] = got
udp.sendto(query("web.test", 16), ("127.0.0.53", 53))
out["txt"] = rcode_and_count(udp.recvfrom(512)[0])
tcp = socket.create_connection(("127.0.0.53", 53), timeout=10)
message = query("web.test", 1)
tcp.sendall(struct.pack("!H", len(message)) + message)
length = struct.unpack("!H", tcp.recv(2))[0]
answer = tcp.recv(length)
out["tcp"] = rcode_and_count(answer) + [socket.inet_ntoa(answer[-4:])]
print(json.dumps(out))
`);
    expect(result.stderr).toBe("");
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(out.resolv).toBe("nameserver 127.0.0.53\n");
    expect(out["web.test"]).toEqual([webAddress]);
    // EAI_NONAME (-2) for the refused ones: REFUSED / NXDOMAIN, no address
    for (const name of ["webdeny.test", "unlisted.test", "private.test"])
      expect(String(out[name]), name).toMatch(/^gaierror -[0-9]+$/);
    expect(out["udp elsewhere"]).toEqual([0, 1]);
    expect(out.pair).toEqual([
      [0, 1],
      [0, 0],
    ]);
    expect(out.txt).toEqual([5, 0]); // REFUSED: only A and AAAA are answered
    expect(out.tcp).toEqual([0, 1, webAddress]);
    const dns = (await egressEvents()).filter((e) => e.details.protocol === "dns");
    const byHost = Object.fromEntries(dns.map((e) => [e.details.host, e]));
    expect(byHost["web.test"]).toMatchObject({
      action: "egress.allowed",
      details: { address: webAddress },
    });
    // Refused before any lookup: no address was ever resolved for them.
    expect(byHost["webdeny.test"]).toMatchObject({
      action: "egress.denied",
      details: { reason: "not_in_shell_allowlist", address: null },
    });
    expect(byHost["unlisted.test"]?.details.address).toBeNull();
    expect(byHost["private.test"]).toMatchObject({
      action: "egress.denied",
      details: { reason: "address_not_public", address: "10.1.2.3" },
    });
  });

  it("redirects ports 80 and 443 of clients that ignore the proxy, deciding on Host and SNI", async () => {
    const result = await exec(`
import http.client, json, os, socket, ssl
out = {}
for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]:
    os.environ.pop(name, None)
def get(address, host):
    c = http.client.HTTPConnection(address, 80, timeout=20)
    try:
        c.request("GET", "/direct", headers={"Host": host})
        r = c.getresponse()
        return [r.status, r.read().decode()]
    except OSError as e:
        return "error %s" % e
out["by name"] = get("web.test", "web.test")
out["ip literal, allowed Host"] = get("${webAddress}", "web.test")
out["ip literal, refused Host"] = get("${webAddress}", "webdeny.test")
out["elsewhere, allowed Host"] = get("192.0.2.1", "web.test")
# the metadata service by IP literal, IPv4 and IPv6: redirected to the proxy, which refuses it
out["metadata v4"] = get("169.254.169.254", "169.254.169.254")
out["metadata v6"] = get("fd00:ec2::254", "[fd00:ec2::254]")
def hello(server_name):
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
def tls(address, server_name):
    s = socket.create_connection((address, 443), timeout=20)
    s.sendall(hello(server_name) if server_name else b"\\x16\\x03\\x01\\x00\\x05hello")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode() or "closed"
out["tls by name"] = tls("web.test", "web.test")
out["tls refused SNI"] = tls("${webAddress}", "webdeny.test")
out["tls no SNI"] = tls("${webAddress}", None)
print(json.dumps(out))
`);
    expect(result.stderr).toBe("");
    expect(JSON.parse(result.stdout)).toEqual({
      "by name": [200, "hello from web /direct host=web.test"],
      "ip literal, allowed Host": [200, "hello from web /direct host=web.test"],
      "ip literal, refused Host": [403, "egress denied: not_in_shell_allowlist\n"],
      "elsewhere, allowed Host": [200, "hello from web /direct host=web.test"],
      "metadata v4": [403, "egress denied: not_in_shell_allowlist\n"],
      "metadata v6": [403, "egress denied: not_in_shell_allowlist\n"],
      "tls by name": "tls upstream saw a ClientHello for web.test",
      "tls refused SNI": "closed",
      "tls no SNI": "closed",
    });
    const reasons = (await egressEvents())
      .filter(
        (e) =>
          e.action === "egress.denied" && (e.details.protocol === "tls" || e.details.port === 80),
      )
      .map((e) => `${e.details.protocol} ${e.details.host} ${e.details.reason}`);
    expect(reasons).toEqual(
      expect.arrayContaining([
        "http webdeny.test not_in_shell_allowlist",
        "tls webdeny.test not_in_shell_allowlist",
        "tls  no_server_name",
      ]),
    );
  });

  it("aggregates a 200-request loop into bounded history per destination and window", async () => {
    const result = await exec(`
import urllib.request
ok = 0
for i in range(200):
    if urllib.request.urlopen("http://loop.test:${httpPort}/n", timeout=20).status == 200:
        ok += 1
print(ok)
`);
    expect(result.stdout.trim()).toBe("200");
    let loop: EgressEvent[] = [];
    const deadline = Date.now() + (WINDOW_SECONDS + 10) * 1000;
    while (Date.now() < deadline) {
      loop = (await egressEvents()).filter((e) => e.details.host === "loop.test");
      if (loop.reduce((sum, e) => sum + e.details.count, 0) >= 200) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(loop.length).toBeLessThanOrEqual(2);
    expect(loop.every((e) => e.action === "egress.allowed")).toBe(true);
    expect(loop.reduce((sum, e) => sum + e.details.count, 0)).toBe(200);
    expect(loop.reduce((sum, e) => sum + e.details.bytes, 0)).toBeGreaterThan(200 * 50);
    expect(loop[0]?.details).toMatchObject({
      address: "127.0.0.1",
      port: httpPort,
      protocol: "http",
    });
    // Metering counts the same bytes against the shell, read from its proxy every checkpoint.
    const loopBytes = loop.reduce((sum, e) => sum + e.details.bytes, 0);
    await expect
      .poll(
        async () =>
          (
            await call<{ total: { egressBytes: number } }>(
              api,
              "GET",
              `/api/v1/usage?shell=${shellId}`,
            )
          ).body.total.egressBytes,
        { timeout: 10_000, interval: 500 },
      )
      .toBeGreaterThanOrEqual(loopBytes);
  }, 60_000);

  it("changes a running shell's allowlist: narrowing at once, widening only once an approver grants it", async () => {
    const resolves = async (name: string) =>
      (
        await exec(`
import socket
try:
    print(socket.getaddrinfo("${name}", 80, proto=socket.IPPROTO_TCP)[0][4][0])
except socket.gaierror:
    print("refused")
`)
      ).stdout.trim();
    const shell = (
      await call<{ egress: { allow: string[] } }>(api, "GET", `/api/v1/shells/${shellId}`)
    ).body;
    const full = shell.egress.allow;
    const member = await call<{ id: string; orgId: string }>(api, "POST", "/api/v1/members", {
      email: "dev@example.com",
      role: "developer",
    });
    expect(member.status).toBe(201);
    const store = await openSqliteStore(join(dataDir, "shells.db"));
    const me = (await call<{ orgId: string }>(api, "GET", "/api/v1/me")).body;
    const { token } = await addKey(store, {
      orgId: me.orgId,
      principal: { type: "user", id: member.body.id },
      scopes: ["shells:instances:read", "shells:instances:control", "shells:instances:exec"],
      name: "dev key",
    });
    await store.close();
    const developer = { url: api.url, token };
    // The agent asks; a person (the developer, a listed approver who neither made the agent nor
    // minted its key) grants.
    const agent = await call<{ id: string }>(api, "POST", "/api/v1/agents", { name: "egress-bot" });
    expect(agent.status).toBe(201);
    const agentKey = await call<{ token: string }>(api, "POST", "/api/v1/keys", {
      name: "egress-bot key",
      scopes: ["shells:instances:read", "shells:instances:control"],
      principal: { type: "agent", id: agent.body.id },
    });
    expect(agentKey.status).toBe(201);
    expect(
      (
        await call(api, "POST", "/api/v1/entitlements", {
          entitlement: "shells.agent.invoke",
          principal: { type: "agent", id: agent.body.id },
        })
      ).status,
    ).toBe(201);
    const bot = { url: api.url, token: agentKey.body.token };
    expect(
      (
        await call(api, "PATCH", "/api/v1/org/policy", {
          approvalGates: { egress_change: "approvers" },
          approvers: [member.body.id],
        })
      ).status,
    ).toBe(200);
    try {
      // Narrowing: never gated, applies at the next question.
      const narrowed = await call<{ egress: { allow: string[] } }>(
        developer,
        "PATCH",
        `/api/v1/shells/${shellId}/egress`,
        { egress: { mode: "allowlist", allow: full.filter((h) => h !== "web.test") } },
      );
      expect(narrowed.status).toBe(200);
      expect(narrowed.body.egress.allow).not.toContain("web.test");
      expect(await resolves("web.test")).toBe("refused");

      // Widening: parked for an approver; nothing changes until the grant.
      const asked = await call<{
        approval: { id: string; action: string; state: string; context: unknown };
      }>(bot, "PATCH", `/api/v1/shells/${shellId}/egress`, {
        egress: { mode: "allowlist", allow: full },
      });
      expect(asked.status).toBe(202);
      expect(asked.body.approval).toMatchObject({
        action: "egress_change",
        state: "pending",
        // The approver sees what is asked, the policy that asks, and the diff of the allowlist.
        context: {
          summary: expect.stringMatching(/^widen the egress allowlist of shell /),
          policy: "org policy: approvalGates.egress_change is approvers",
          diff: { subject: "shell egress", widens: ["allow + web.test"], narrows: [] },
        },
      });
      expect(await resolves("web.test")).toBe("refused");
      const agentGrant = await call(
        bot,
        "POST",
        `/api/v1/approvals/${asked.body.approval.id}/grant`,
        {
          reason: "mine",
        },
      );
      expect(agentGrant.status).toBe(403); // agents never approve
      const granted = await call<{ state: string; outcome: string }>(
        developer,
        "POST",
        `/api/v1/approvals/${asked.body.approval.id}/grant`,
        { reason: "needed for the build" },
      );
      expect(granted.body).toMatchObject({ state: "granted", outcome: "success" });
      expect(await resolves("web.test")).toBe(webAddress);

      const changes = (
        await call<{
          items: { action: string; actor: { id: string }; details: { widening: boolean } }[];
        }>(
          api,
          "GET",
          `/api/v1/activity?shell=${shellId}&action=shell.action.egress_change&limit=50`,
        )
      ).body.items;
      expect(
        changes
          .map((e) => [e.actor.id, e.details.widening])
          .sort((a, b) => String(a[1]).localeCompare(String(b[1]))),
      ).toEqual([
        [member.body.id, false],
        [agent.body.id, true],
      ]);
    } finally {
      await call(api, "PATCH", "/api/v1/org/policy", {
        approvalGates: { egress_change: "none" },
        approvers: [],
      });
    }
  }, 60_000);

  it("honours a project's deny from inside the shell, and no shell allowlist widens it", async () => {
    expect((await call(api, "POST", "/api/v1/projects", { name: "locked" })).status).toBe(201);
    const rules = await call(api, "PUT", "/api/v1/projects/locked/egress", {
      rules: { denyHosts: ["allowed.test"] },
    });
    expect(rules.status).toBe(200);
    const created = await call<{ id: string; status: string }>(api, "POST", "/api/v1/shells", {
      language: "python",
      project: "locked",
      egress: { mode: "allowlist", allow: ["allowed.test", "web.test"] },
    });
    expect(created.status).toBe(201);
    const locked = created.body.id;
    // The probe drops NO_PROXY so that 127.0.0.1 means the host's, through the proxy.
    const run = (shell: string) =>
      probeEgress(
        shell,
        [
          `http://allowed.test:${httpPort}/p`,
          `http://127.0.0.1:${httpPort}/p`,
          "http://web.test/p",
        ],
        "allowed.test",
      );
    try {
      expect(await run(locked)).toEqual({
        [`http://allowed.test:${httpPort}/p`]: [403, "egress denied: host_denied"],
        [`http://127.0.0.1:${httpPort}/p`]: [403, "egress denied: not_in_shell_allowlist"],
        "http://web.test/p": 200,
        dns: "refused",
      });
      // The shell widens its own allowlist as far as it can: the project's deny still holds.
      const widened = await call(api, "PATCH", `/api/v1/shells/${locked}/egress`, {
        egress: { mode: "allowlist", allow: ["allowed.test", "web.test", "127.0.0.1/32"] },
      });
      expect(widened.status).toBe(200);
      const after = await run(locked);
      expect(after[`http://allowed.test:${httpPort}/p`]).toEqual([
        403,
        "egress denied: host_denied",
      ]);
      expect(after.dns).toBe("refused");
      // The IP literal is now on the shell's list and nothing in the project refuses it.
      expect(after[`http://127.0.0.1:${httpPort}/p`]).toBe(200);
      // The default project's shell, with the same host on its list, is untouched.
      expect((await run(shellId))[`http://allowed.test:${httpPort}/p`]).toBe(200);
      const denied = (
        await call<{ items: EgressEvent[] }>(
          api,
          "GET",
          `/api/v1/activity?shell=${locked}&action=egress.denied&limit=50`,
        )
      ).body.items.map((e) => `${e.details.protocol} ${e.details.host} ${e.details.reason}`);
      expect(denied).toEqual(
        expect.arrayContaining(["http allowed.test host_denied", "dns allowed.test host_denied"]),
      );
    } finally {
      await call(api, "DELETE", `/api/v1/shells/${locked}`);
    }
  }, 120_000);

  it("honours a shell's own deny lists from inside it, and a deny added while it runs", async () => {
    const allow = ["allowed.test", "web.test"];
    const created = await call<{ id: string }>(api, "POST", "/api/v1/shells", {
      language: "python",
      egress: { mode: "allowlist", allow, deny: { hosts: ["web.test"] } },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const shell = created.body.id;
    const run = () =>
      probeEgress(shell, [`http://allowed.test:${httpPort}/p`, "http://web.test/p"], "web.test");
    try {
      expect(await run()).toEqual({
        [`http://allowed.test:${httpPort}/p`]: 200,
        "http://web.test/p": [403, "egress denied: host_denied"],
        dns: "refused",
      });
      // Denying the upstream's port as well narrows: no approval, applied from the next request.
      const narrowed = await call(api, "PATCH", `/api/v1/shells/${shell}/egress`, {
        egress: { mode: "allowlist", allow, deny: { hosts: ["web.test"], ports: [httpPort] } },
      });
      expect(narrowed.status, JSON.stringify(narrowed.body)).toBe(200);
      expect((await run())[`http://allowed.test:${httpPort}/p`]).toEqual([
        403,
        "egress denied: port_denied",
      ]);
    } finally {
      await call(api, "DELETE", `/api/v1/shells/${shell}`);
    }
  }, 120_000);

  it("finds its proxy again after the control plane restarts", async () => {
    // The sandbox outlives the server; the new server's reconciler starts the shell's proxy on
    // the same socket, where the shell's forwarder finds it.
    await server.close();
    server = await startServer(config);
    api = { ...api, url: server.url };
    const result = await exec(`
import urllib.request
print(urllib.request.urlopen("http://allowed.test:${httpPort}/again", timeout=20).read().decode())
`);
    expect(result.stdout.trim()).toBe(`hello from upstream /again host=allowed.test:${httpPort}`);
  }, 60_000);
});
