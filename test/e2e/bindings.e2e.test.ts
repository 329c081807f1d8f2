import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCa } from "../../apps/server/src/test-support/test-ca.js";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";

// Service bindings through real container shells: a sealed shell and an internet shell are granted
// a binding to an HTTPS upstream (a test CA that only the server's egress proxy is told to trust),
// call it through their binding URL and get the upstream's answer; the upstream checks it received
// the secret. Then every place the secret could leak is searched for it: inside the shells (every
// process's environment and command line, the files they wrote, their disks from the host), every
// API response the test saw, the server's own stdout and stderr, the activity history and the
// store's files. The server runs as a child process, so its output is exactly what an operator sees.

const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const SECRET = `sk_live_${randomBytes(18).toString("hex")}`;
const ROTATED = `sk_live_${randomBytes(18).toString("hex")}`;
const SECRETS = [SECRET, ROTATED];
/** The redirect target: another loopback address, another host as far as the proxy can tell. */
const LANDING_ADDRESS = "127.0.0.2";

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

async function freePort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** The test's secrets that appear in `text`. */
function leaks(text: string): string[] {
  return SECRETS.filter((secret) => text.includes(secret));
}

/**
 * The test's secrets that appear in a file, read in chunks (a shell's disk image is large) and
 * asynchronously, so the event loop keeps serving the test's own connections meanwhile.
 */
async function fileLeaks(path: string): Promise<string[]> {
  const needles = SECRETS.map((s) => Buffer.from(s));
  const overlap = Math.max(...needles.map((n) => n.length)) - 1;
  const found = new Set<string>();
  const file = await open(path, "r");
  try {
    const chunk = Buffer.alloc(8 << 20);
    let carry = Buffer.alloc(0);
    for (let position = 0; ;) {
      const { bytesRead } = await file.read(chunk, 0, chunk.length, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      needles.forEach((needle, i) => {
        if (window.includes(needle)) found.add(SECRETS[i] as string);
      });
      carry = Buffer.from(window.subarray(Math.max(0, window.length - overlap)));
    }
  } finally {
    await file.close();
  }
  return [...found];
}

describe.runIf(hostReport.available)("service bindings through real container shells", () => {
  let dataDir = "";
  let child: ChildProcess | undefined;
  let serverOutput = "";
  let url = "";
  let token = "";
  let upstream: Server;
  let landing: Server;
  let upstreamPort = 0;
  let landingPort = 0;
  const upstreamSeen: Seen[] = [];
  const landingSeen: Seen[] = [];
  /** Every API response body the test received. */
  const responses: string[] = [];
  let sealedShell = "";
  let internetShell = "";
  const startedAt = Date.now() / 1000;
  let serverPort = 0;
  let caPath = "";

  /** Starts the control plane as its own process, its stdout and stderr kept for the search. */
  async function startServerProcess(): Promise<void> {
    child = spawn(
      process.execPath,
      [
        "apps/server/dist/server.js",
        "--backend",
        "container",
        "--data-dir",
        dataDir,
        "--port",
        String(serverPort),
        // The most the server says about itself: a secret in any debug line would show here.
        "--log-level",
        "trace",
      ],
      {
        env: {
          ...process.env,
          SHELLS_IMAGES_DIR: IMAGES,
          SHELLS_VALIDATE_RESPONSES: "1",
          SHELLS_BINDINGS_CA_FILE: caPath,
          SHELLS_EGRESS_DECISION_WINDOW_SECONDS: "2",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    child.stdout?.on("data", (chunk: Buffer) => (serverOutput += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (serverOutput += chunk.toString()));
    for (let i = 0; i < 300; i += 1) {
      try {
        if ((await fetch(`${url}/readyz`)).ok) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the server did not become ready");
  }

  async function call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    responses.push(text);
    return { status: res.status, body: JSON.parse(text) as T };
  }

  async function exec(shellId: string, script: string) {
    const res = await call<{ exitCode: number; stdout: string; stderr: string }>(
      "POST",
      `/api/v1/shells/${shellId}/exec`,
      { command: ["python3", "-c", script], timeoutMs: 120_000 },
    );
    expect(res.status).toBe(200);
    expect(res.body.stderr).toBe("");
    return JSON.parse(res.body.stdout) as Record<string, unknown>;
  }

  /** A python snippet: `get(url, method="GET")` → [status, headers, body] without following redirects. */
  const CLIENT = `
import json, os, urllib.request, urllib.error
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
plain = urllib.request.build_opener(NoRedirect)
def get(url, method="GET", follow=False):
    request = urllib.request.Request(url, method=method)
    try:
        answer = (urllib.request.urlopen if follow else plain.open)(request, timeout=30)
    except urllib.error.HTTPError as e:
        answer = e
    return [answer.status if hasattr(answer, "status") else answer.code, dict(answer.headers), answer.read().decode()]
base = os.environ.get("SHELLS_BINDING_ECHO_URL")
`;

  beforeAll(async () => {
    const ca = makeTestCa(["127.0.0.1"]);
    dataDir = mkdtempSync(join(tmpdir(), "shells-bindings-"));
    const caFile = join(dataDir, "test-ca.pem");
    writeFileSync(caFile, ca.caCert);

    upstream = createHttpsServer({ cert: ca.cert, key: ca.key }, (req, res) => {
      upstreamSeen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      const auth = req.headers.authorization ?? "";
      const authorized = auth === `Bearer ${SECRET}` || auth === `Bearer ${ROTATED}`;
      const path = req.url?.split("?")[0];
      if (path === "/v1/echo") {
        res.writeHead(authorized ? 200 : 401, { "content-type": "text/plain" });
        res.end(`${authorized ? "authorized" : "unauthorized"} ${req.method} ${req.url}`);
      } else if (path === "/v1/reflect") {
        res.writeHead(200, { "x-echo": auth, "content-type": "text/plain" });
        res.end(`you sent ${auth}`);
      } else if (path === "/v1/redirect") {
        res.writeHead(302, { location: `http://${LANDING_ADDRESS}:${landingPort}/landing` });
        res.end();
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    upstreamPort = (upstream.address() as AddressInfo).port;
    landing = createHttpServer((req, res) => {
      landingSeen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      res.end("landed");
    });
    await new Promise<void>((resolve) => landing.listen(0, LANDING_ADDRESS, resolve));
    landingPort = (landing.address() as AddressInfo).port;

    expect(existsSync("apps/server/dist/server.js"), "build first: npx tsc -b").toBe(true);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    serverPort = port;
    caPath = caFile;
    await startServerProcess();
    token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();

    // The upstreams listen on the host's loopback, which the org opens explicitly (as an org admin
    // opens a private range); a shell reaches none of it except through its binding.
    const policy = await call("PATCH", "/api/v1/org/policy", {
      egress: { allowCidrs: ["127.0.0.1/32", `${LANDING_ADDRESS}/32`] },
    });
    expect(policy.status).toBe(200);
    for (const name of ["echo", "other"]) {
      const created = await call("POST", "/api/v1/bindings", {
        name,
        upstream: `https://127.0.0.1:${upstreamPort}`,
        inject: "Authorization: Bearer {secret}",
        paths: ["/v1/*"],
        methods: ["GET"],
        secret: SECRET,
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    const sealed = await call<{ id: string; network: string; status: string }>(
      "POST",
      "/api/v1/shells",
      { language: "python", name: "bound-sealed", bindings: ["echo"] },
    );
    expect(sealed.status, JSON.stringify(sealed.body)).toBe(201);
    expect(sealed.body).toMatchObject({ network: "sealed", status: "running" });
    sealedShell = sealed.body.id;
    const open = await call<{ id: string; network: string }>("POST", "/api/v1/shells", {
      language: "python",
      name: "bound-internet",
      egress: { mode: "allowlist", allow: [`${LANDING_ADDRESS}/32`] },
      bindings: ["echo"],
    });
    expect(open.status, JSON.stringify(open.body)).toBe(201);
    expect(open.body.network).toBe("internet");
    internetShell = open.body.id;
  }, 180_000);

  afterAll(async () => {
    for (const id of [sealedShell, internetShell])
      if (id) await call("DELETE", `/api/v1/shells/${id}`).catch(() => undefined);
    if (child) {
      child.kill("SIGTERM");
      await new Promise((resolve) => child?.once("exit", resolve));
    }
    upstream?.close();
    landing?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("a sealed shell calls its binding URL and gets the upstream's answer; the upstream got the secret", async () => {
    const out = await exec(
      sealedShell,
      `${CLIENT}
out = {"url": base, "answer": get(base + "/v1/echo?x=1")}
# keep the answer on disk: the secret hunt below must find files the shell wrote
open("/workspace/answer.txt", "w").write(out["answer"][2])
print(json.dumps(out))
`,
    );
    expect(out.url).toBe("http://127.0.0.1:3128/bindings/echo");
    expect(out.answer).toEqual([200, expect.any(Object), "authorized GET /v1/echo?x=1"]);
    const call = upstreamSeen.find((s) => s.url === "/v1/echo?x=1");
    expect(call?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(call?.headers.host).toBe(`127.0.0.1:${upstreamPort}`);
  });

  it("a sealed shell reaches its binding and nothing else: the proxy refuses every other destination", async () => {
    const before = upstreamSeen.length;
    const out = await exec(
      sealedShell,
      `${CLIENT}
import http.client, socket
proxy = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))
try:
    proxy.open("http://${LANDING_ADDRESS}:${landingPort}/via-proxy", timeout=20)
    out = {"proxied": "reached"}
except urllib.error.HTTPError as e:
    out = {"proxied": [e.code, e.read().decode()]}
tunnel = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
tunnel.set_tunnel("127.0.0.1", ${upstreamPort})
try:
    tunnel.connect()
    out["tunnel"] = "open"
except OSError as e:
    out["tunnel"] = str(e)
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("${LANDING_ADDRESS}", ${landingPort}))
    out["direct"] = "connected"
except OSError as e:
    out["direct"] = e.errno
print(json.dumps(out))
`,
    );
    expect(out.proxied).toEqual([403, "egress denied: not_in_shell_allowlist\n"]);
    expect(String(out.tunnel)).toContain("403");
    expect(typeof out.direct).toBe("number");
    expect(upstreamSeen.length).toBe(before);
    expect(landingSeen).toEqual([]);
  });

  it("refuses a binding the shell was not granted, and paths and methods outside the binding's allowance", async () => {
    const before = upstreamSeen.length;
    const out = await exec(
      sealedShell,
      `${CLIENT}
import socket
def raw(target, method="GET"):
    # a request line exactly as written (urllib would normalise the dots away)
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(f"{method} {target} HTTP/1.1\\r\\nhost: 127.0.0.1:3128\\r\\nconnection: close\\r\\n\\r\\n".encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    head, _, body = data.decode().partition("\\r\\n\\r\\n")
    return [int(head.split(" ")[1]), body]
print(json.dumps({
    "ungranted": get("http://127.0.0.1:3128/bindings/other/v1/echo")[::2],
    "unknown": get("http://127.0.0.1:3128/bindings/nothing/v1/echo")[::2],
    "method": get(base + "/v1/echo", method="POST")[::2],
    "path": get(base + "/admin")[::2],
    "dots": raw("/bindings/echo/v1/../admin"),
    "encoded": raw("/bindings/echo/v1/%2e%2e/admin"),
}))
`,
    );
    expect(out).toEqual({
      ungranted: [403, "binding denied: not_granted\n"],
      unknown: [403, "binding denied: not_granted\n"],
      method: [403, "binding denied: method_not_allowed\n"],
      path: [403, "binding denied: path_not_allowed\n"],
      dots: [400, "binding denied: path_invalid\n"],
      encoded: [400, "binding denied: path_invalid\n"],
    });
    expect(upstreamSeen.length).toBe(before);
  });

  it("hands a redirect back without following it: a client that follows it goes on without the secret", async () => {
    const before = upstreamSeen.length;
    const out = await exec(
      internetShell,
      `${CLIENT}
print(json.dumps({"url": base, "unfollowed": get(base + "/v1/redirect"), "followed": get(base + "/v1/redirect", follow=True)}))
`,
    );
    expect(out.url).toBe("http://127.0.0.1:3128/bindings/echo");
    const [status, headers] = out.unfollowed as [number, Record<string, string>];
    expect(status).toBe(302);
    expect(headers.Location ?? headers.location).toBe(
      `http://${LANDING_ADDRESS}:${landingPort}/landing`,
    );
    expect((out.followed as unknown[])[2]).toBe("landed");
    // The upstream was asked twice (with the secret); the landing host once, by the shell, without.
    expect(upstreamSeen.slice(before).map((s) => [s.url, s.headers.authorization])).toEqual([
      ["/v1/redirect", `Bearer ${SECRET}`],
      ["/v1/redirect", `Bearer ${SECRET}`],
    ]);
    expect(landingSeen.map((s) => s.url)).toEqual(["/landing"]);
    expect(JSON.stringify(landingSeen)).not.toContain(SECRET);
  });

  it("strips the secret from what an upstream echoes back, in headers and body", async () => {
    const out = await exec(
      internetShell,
      `${CLIENT}\nprint(json.dumps(get(base + "/v1/reflect")))`,
    );
    const [status, headers, body] = out as unknown as [number, Record<string, string>, string];
    expect(status).toBe(200);
    expect(Object.keys(headers).map((h) => h.toLowerCase())).not.toContain("x-echo");
    expect(body).toBe("you sent [redacted]");
    expect(upstreamSeen.at(-1)?.headers.authorization).toBe(`Bearer ${SECRET}`);
  });

  it("gives a one-shot run its binding, and stops the run's proxy when the run is torn down", async () => {
    const started = await call<{ id: string; shellId: string }>("POST", "/api/v1/runs", {
      language: "python",
      bindings: ["echo"],
      code: [
        "import os, urllib.request",
        'answer = urllib.request.urlopen(os.environ["SHELLS_BINDING_ECHO_URL"] + "/v1/echo?run=1", timeout=30).read().decode()',
        "shells.result({'answer': answer})",
      ].join("\n"),
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    let run: { status: string; result: unknown } = { status: "running", result: null };
    for (let i = 0; i < 300 && run.status === "running"; i += 1) {
      await new Promise((r) => setTimeout(r, 200));
      run = (await call<typeof run>("GET", `/api/v1/runs/${started.body.id}/result`)).body;
    }
    expect(run).toMatchObject({
      status: "succeeded",
      result: { answer: "authorized GET /v1/echo?run=1" },
    });
    expect(upstreamSeen.at(-1)?.headers.authorization).toBe(`Bearer ${SECRET}`);
    const socket = join(dataDir, "egress", `${started.body.shellId}.sock`);
    for (let i = 0; i < 100 && existsSync(socket); i += 1)
      await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(socket)).toBe(false);
  }, 120_000);

  it("uses a rotated secret from the next call on, and refuses a deleted binding", async () => {
    expect((await call("POST", "/api/v1/bindings/echo/rotate", { secret: ROTATED })).status).toBe(
      200,
    );
    const rotated = await exec(sealedShell, `${CLIENT}\nprint(json.dumps(get(base + "/v1/echo")))`);
    expect((rotated as unknown as unknown[])[0]).toBe(200);
    expect(upstreamSeen.at(-1)?.headers.authorization).toBe(`Bearer ${ROTATED}`);
    expect((await call("DELETE", "/api/v1/bindings/other")).status).toBe(200);
    const bindings = await call<{ items: { name: string }[] }>("GET", "/api/v1/bindings");
    expect(bindings.body.items.map((b) => b.name)).toEqual(["echo"]);
  });

  it("finds its binding again after the control plane restarts (grants come from the store)", async () => {
    // Sandboxes outlive the server; the new one's reconciler starts each proxy again with the
    // shell's grants, and the forwarder inside the shell finds it at the same socket.
    child?.kill("SIGTERM");
    await new Promise((resolve) => child?.once("exit", resolve));
    await startServerProcess();
    const out = await exec(
      sealedShell,
      `${CLIENT}\nprint(json.dumps(get(base + "/v1/echo?again=1")))`,
    );
    expect(out as unknown as unknown[]).toEqual([
      200,
      expect.any(Object),
      "authorized GET /v1/echo?again=1",
    ]);
    expect(upstreamSeen.at(-1)?.headers.authorization).toBe(`Bearer ${ROTATED}`);
  }, 60_000);

  it("never puts the secret inside a shell: no process's environment or command line, no file it wrote", async () => {
    for (const shellId of [sealedShell, internetShell]) {
      const out = await exec(
        shellId,
        `
import base64, json, os, stat
os.sync()
out = {"env": dict(os.environ), "environ": {}, "cmdline": {}, "files": {}}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for kind in ("environ", "cmdline"):
        try:
            out[kind][pid] = base64.b64encode(open(f"/proc/{pid}/{kind}", "rb").read()).decode()
        except OSError as e:
            out[kind][pid] = "unreadable %d" % e.errno
# every regular file written since the test began (the base image predates the secret)
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    for name in files:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and max(st.st_mtime, st.st_ctime) >= ${Math.floor(startedAt) - 5}:
                with open(path, "rb") as f:
                    out["files"][path] = base64.b64encode(f.read(1 << 20)).decode()
        except OSError:
            pass
print(json.dumps(out))
`,
      );
      const decoded = (group: unknown) =>
        Object.values(group as Record<string, string>).map((v) =>
          v.startsWith("unreadable") ? v : Buffer.from(v, "base64").toString("latin1"),
        );
      const environ = decoded(out.environ);
      const cmdlines = decoded(out.cmdline);
      const files = decoded(out.files);
      // The hunt saw what it should: the binding URL in the environment, processes, written files.
      expect(JSON.stringify(out.env)).toContain("/bindings/echo");
      expect(environ.length).toBeGreaterThan(1);
      expect(environ.filter((e) => !e.startsWith("unreadable")).join("\n")).toContain(
        "SHELLS_BINDING_ECHO_URL=",
      );
      if (shellId === sealedShell)
        expect(Object.keys(out.files as object)).toContain("/workspace/answer.txt");
      const searched = [JSON.stringify(out.env), ...environ, ...cmdlines, ...files].join("\n");
      expect(leaks(searched), `inside ${shellId}`).toEqual([]);

      // From the host: the shell's whole disk (every byte it ever wrote, deleted files included)
      // and its state directory.
      const shellDir = join(dataDir, "container", "shells", shellId);
      const searchedFiles = readdirSync(shellDir, { withFileTypes: true })
        .filter((entry) => entry.isFile())
        .map((entry) => entry.name);
      expect(searchedFiles).toContain("disk.img");
      for (const file of searchedFiles)
        expect(await fileLeaks(join(shellDir, file)), `${shellDir}/${file}`).toEqual([]);
    }
  }, 180_000);

  it("never puts the secret in an API response, the server's output, the history or the store's files", async () => {
    // The proxy's decisions: written aggregated, each with its reason.
    await new Promise((r) => setTimeout(r, 2500));
    const events: { action: string; outcome: string; details: Record<string, unknown> }[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: typeof events; nextCursor: string | null } } = await call(
        "GET",
        `/api/v1/activity?limit=200${cursor ? `&cursor=${cursor}` : ""}`,
      );
      events.push(...page.body.items);
      cursor = page.body.nextCursor;
    } while (cursor);
    const bindingEvents = events.filter((e) => e.action.startsWith("binding."));
    expect(bindingEvents.map((e) => e.action)).toEqual(
      expect.arrayContaining([
        "binding.create",
        "binding.rotate",
        "binding.delete",
        "binding.invoked",
        "binding.denied",
      ]),
    );
    expect(
      bindingEvents
        .filter((e) => e.action === "binding.denied")
        .map((e) => e.details.reason)
        .sort(),
    ).toEqual(
      expect.arrayContaining([
        "method_not_allowed",
        "not_granted",
        "path_invalid",
        "path_not_allowed",
      ]),
    );
    expect(
      bindingEvents.find((e) => e.action === "binding.invoked" && e.details.path === "/v1/echo"),
    ).toMatchObject({
      outcome: "success",
      details: { binding: "echo", method: "GET", status: 200 },
    });

    expect(responses.length).toBeGreaterThan(10);
    expect(leaks(responses.join("\n")), "API responses").toEqual([]);
    expect(serverOutput.length, "the server logged at trace level").toBeGreaterThan(0);
    expect(leaks(serverOutput), "server stdout/stderr").toEqual([]);
    const storeFiles = readdirSync(dataDir).filter((f) => f.startsWith("shells.db"));
    expect(storeFiles).toContain("shells.db");
    for (const file of storeFiles) expect(await fileLeaks(join(dataDir, file)), file).toEqual([]);
  });
});
