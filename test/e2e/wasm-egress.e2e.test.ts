/**
 * The `internet` mode and service bindings on the wasm class, through a real server and its real
 * egress proxy: a wasm `internet` shell's `fetch` (QuickJS) reaches an allowed loopback upstream
 * and is denied the metadata address and a private one (with `egress.denied` events), and a sealed
 * python wasm shell granted a binding calls it with `urllib.request` while the secret is found
 * nowhere the guest can look. The worker's jail has no network: each request goes over the
 * worker's protocol to the backend, which carries it to the shell's proxy socket.
 */
import { WasmBackend } from "@shells/backend-wasm";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEgressFixture, type EgressFixture } from "./egress-fixture.js";
import { call } from "./harness.js";

const available =
  (await new WasmBackend({ stateDir: "/nonexistent" }).availability())[0]?.available === true;

const SECRET = `sk_live_${randomBytes(18).toString("hex")}`;

interface EgressEvent {
  action: string;
  details: { host: string; protocol: string; reason?: string };
}

describe.skipIf(!available)("wasm shells' egress through the server", () => {
  let fixture: EgressFixture | undefined;
  let api: { url: string; token: string };
  let exec: EgressFixture["exec"];
  let upstreamPort = 0;
  let securedAuth: string[] = [];
  let internetShell = "";
  let boundShell = "";

  beforeAll(async () => {
    fixture = await startEgressFixture({ name: "wasm-egress", secret: SECRET });
    ({ api, upstreamPort, securedAuth, exec } = fixture);
    ({ internetShell, boundShell } = await fixture.createShells({
      internet: { language: "node", runtime: "wasm" },
      bound: { language: "python", runtime: "wasm" },
    }));
  }, 180_000);

  afterAll(async () => {
    await fixture?.close();
  }, 120_000);

  it("fetches an allowed upstream through the proxy, and is denied the metadata and private addresses", async () => {
    const allowed = await exec(internetShell, [
      "node",
      "-e",
      "console.log('proxy=' + process.env.HTTP_PROXY); fetch(process.argv[1]).then((r) => r.text()).then(console.log)",
      `http://allowed.test:${upstreamPort}/hello`,
    ]);
    expect(allowed.stderr).toBe("");
    expect(allowed.stdout).toContain("proxy=http://127.0.0.1:3128");
    expect(allowed.stdout).toContain("upstream saw /hello");
    for (const target of ["metadata.test", "169.254.169.254", "private.test", "10.1.2.3"]) {
      for (const scheme of ["http", "https"]) {
        const denied = await exec(internetShell, [
          "node",
          "-e",
          "fetch(process.argv[1]).then((r) => console.log(r.status), (e) => console.log(e.message))",
          `${scheme}://${target}/latest/meta-data`,
        ]);
        expect(denied.stdout.trim(), `${scheme}://${target}`).toBe("403");
      }
    }
    const events = (
      await call<{ items: EgressEvent[] }>(
        api,
        "GET",
        `/api/v1/activity?shell=${internetShell}&action=egress.&limit=100`,
      )
    ).body.items;
    const denied = events.filter((e) => e.action === "egress.denied").map((e) => e.details.host);
    expect(denied).toEqual(
      expect.arrayContaining(["metadata.test", "169.254.169.254", "private.test", "10.1.2.3"]),
    );
    expect(events.some((e) => e.action === "egress.allowed")).toBe(true);
  }, 120_000);

  it("calls a binding from a sealed python shell, and the secret is nowhere the guest can look", async () => {
    const called = await exec(boundShell, [
      "python3",
      "-c",
      [
        "import os, urllib.request",
        "url = os.environ['SHELLS_BINDING_ECHO_URL']",
        "print('url=' + url)",
        "answer = urllib.request.urlopen(url + '/v1/echo').read().decode()",
        "open('/workspace/answer.txt', 'w').write(answer)",
        "print(answer)",
      ].join("\n"),
    ]);
    expect(called.stderr).toBe("");
    expect(called.stdout).toContain("url=http://127.0.0.1:3128/bindings/echo");
    expect(called.stdout).toContain("authorized");
    expect(securedAuth).toContain(`Bearer ${SECRET}`);
    // Everything the guest can read: its environment and every file under / of its view.
    const search = [
      "import os, sys",
      "needle = sys.argv[1] + sys.argv[2]",
      "found = [k for k, v in os.environ.items() if needle in v]",
      "for root, dirs, files in os.walk('/'):",
      "    if root.startswith(('/proc', '/dev', '/sys')): continue",
      "    for f in files:",
      "        p = os.path.join(root, f)",
      "        try:",
      "            if needle.encode() in open(p, 'rb').read(): found.append(p)",
      "        except Exception: pass",
      "print('found', found)",
    ].join("\n");
    const searched = await exec(boundShell, [
      "python3",
      "-c",
      search,
      SECRET.slice(0, 6),
      SECRET.slice(6),
    ]);
    expect(searched.stdout.trim()).toBe("found []");
    // The search would have found it: a file that holds the secret is listed.
    await exec(boundShell, [
      "python3",
      "-c",
      "import sys; open('/workspace/control', 'w').write(sys.argv[1] + sys.argv[2])",
      SECRET.slice(0, 6),
      SECRET.slice(6),
    ]);
    const control = await exec(boundShell, [
      "python3",
      "-c",
      search,
      SECRET.slice(0, 6),
      SECRET.slice(6),
    ]);
    expect(control.stdout).toContain("/workspace/control");
  }, 180_000);
});
