/**
 * The `internet` mode and service bindings on the microvm class, through a real server and its
 * real egress proxy: a microvm `internet` shell reaches an allowed loopback upstream and is denied
 * the metadata address and a private one (with `egress.denied` events), through the proxy its
 * variables name and, ignoring them, through port 80 of whatever address it dials (redirected to
 * the proxy, decided on Host); a sealed microvm shell granted a binding calls it while the secret
 * is found nowhere in the guest, and reaches no address's port 80.
 *
 * Two shells only: each is a QEMU guest restored from the bash template at 128 MiB (made by the
 * test global setup), ~1 s under emulation. The bash image has no HTTP client: requests are
 * written by hand over bash's /dev/tcp, which is all the relay needs.
 */
import { randomBytes } from "node:crypto";
import { createServer as createHttpServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  missingTools,
  TEST_MICROVM_DIR,
} from "../../packages/backend-microvm/src/internal/test-support.js";
import { direct, startEgressFixture, viaProxy, type EgressFixture } from "./egress-fixture.js";
import { call } from "./harness.js";

const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const SECRET = `sk_live_${randomBytes(18).toString("hex")}`;
/** The secret as a pattern that matches it but not itself: the search's own command line. */
const SECRET_PATTERN = `s[k]${SECRET.slice(2)}`;

interface EgressEvent {
  action: string;
  details: { host: string; protocol: string; reason?: string };
}

/**
 * A loopback address of its own for the upstream on port 80: a redirected request goes to the
 * port the client dialled, and 127.0.0.1:80 may be taken on the host.
 */
const PORT_80_ADDRESS = "127.83.80.1";

describe.skipIf(missingTools.length > 0)("microvm shells' egress through the server", () => {
  let fixture: EgressFixture | undefined;
  let api: { url: string; token: string };
  let exec: EgressFixture["exec"];
  let plain: Server | undefined;
  let upstreamPort = 0;
  let securedAuth: string[] = [];
  let internetShell = "";
  let boundShell = "";

  beforeAll(async () => {
    const port80 = createHttpServer((req, res) =>
      res.end(`port 80 saw ${req.url} for ${req.headers.host}`),
    );
    plain = port80;
    await new Promise<void>((resolve) => port80.listen(80, PORT_80_ADDRESS, resolve));
    fixture = await startEgressFixture({
      name: "microvm-egress",
      secret: SECRET,
      env: { SHELLS_IMAGES_DIR: IMAGES, SHELLS_MICROVM_CACHE_DIR: TEST_MICROVM_DIR },
      testHosts: { "plain.test": [PORT_80_ADDRESS] },
      allowCidrs: [`${PORT_80_ADDRESS}/32`],
      execTimeoutMs: 120_000,
    });
    ({ api, upstreamPort, securedAuth, exec } = fixture);
    const microvm = { language: "bash", runtime: "microvm", resources: { memoryMb: 128 } };
    ({ internetShell, boundShell } = await fixture.createShells({
      internet: microvm,
      bound: microvm,
      allow: ["plain.test"],
    }));
  }, 180_000);

  afterAll(async () => {
    await fixture?.close();
    plain?.close();
  }, 120_000);

  // First: the metadata address's events then come from this test alone.
  it("reaches an allowed host on port 80 of any address it dials, redirected to the proxy and decided on Host; the metadata address is denied", async () => {
    // An address the guest has no route to but loopback's: the proxy connects to what Host names.
    const allowed = await exec(
      internetShell,
      `unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy; ${direct("93.184.216.34", 80, "GET /plain HTTP/1.1", "Host: plain.test\\r\\n")}`,
    );
    expect(allowed.stdout).toMatch(/^HTTP\/1.1 200/);
    expect(allowed.stdout).toContain("port 80 saw /plain for plain.test");
    const denied = await exec(
      internetShell,
      direct(
        "169.254.169.254",
        80,
        "GET /latest/meta-data HTTP/1.1",
        "Host: 169.254.169.254\\r\\n",
      ),
    );
    expect(denied.stdout).toMatch(/^HTTP\/1.1 403/);
    expect(denied.stdout).toContain("x-shells-egress: denied");
    const events = (
      await call<{ items: EgressEvent[] }>(
        api,
        "GET",
        `/api/v1/activity?shell=${internetShell}&action=egress.&limit=100`,
      )
    ).body.items;
    expect(events).toContainEqual(
      expect.objectContaining({
        action: "egress.allowed",
        details: expect.objectContaining({ host: "plain.test", port: 80 }),
      }),
    );
    expect(events).toContainEqual(
      expect.objectContaining({
        action: "egress.denied",
        details: expect.objectContaining({ host: "169.254.169.254", port: 80 }),
      }),
    );
  }, 120_000);

  it("reaches an allowed upstream through the proxy its variables name, and is denied the metadata and private addresses", async () => {
    const allowed = await exec(
      internetShell,
      `echo "proxy=$HTTP_PROXY"; ${viaProxy(`GET http://allowed.test:${upstreamPort}/hello HTTP/1.1`, `Host: allowed.test:${upstreamPort}\\r\\n`)}`,
    );
    expect(allowed.stdout).toContain("proxy=http://127.0.0.1:3128");
    expect(allowed.stdout).toContain("upstream saw /hello");
    for (const target of ["metadata.test", "169.254.169.254", "private.test", "10.1.2.3"]) {
      const denied = await exec(
        internetShell,
        viaProxy(`GET http://${target}/latest/meta-data HTTP/1.1`, `Host: ${target}\\r\\n`),
      );
      expect(denied.stdout, target).toMatch(/^HTTP\/1.1 403/);
    }
    // Past the proxy, ports 80 and 443 alone: any other port is refused in the guest itself.
    const other = await exec(
      internetShell,
      "timeout 10 bash -c 'exec 3<>/dev/tcp/169.254.169.254/8080' || echo refused",
    );
    expect(other.stdout).toContain("refused");
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
  }, 120_000);

  it("calls a binding from a sealed microvm shell, and the secret is nowhere in the guest", async () => {
    const called = await exec(
      boundShell,
      `echo "url=$SHELLS_BINDING_ECHO_URL"; ${viaProxy("GET /bindings/echo/v1/echo HTTP/1.1", "Host: 127.0.0.1:3128\\r\\n")} > /workspace/answer.txt; cat /workspace/answer.txt`,
    );
    expect(called.stdout).toContain("url=http://127.0.0.1:3128/bindings/echo");
    expect(called.stdout).toContain("authorized");
    expect(securedAuth).toContain(`Bearer ${SECRET}`);
    // A sealed shell has no transparent ports: no address's port 80 answers.
    const port80 = await exec(
      boundShell,
      "timeout 10 bash -c 'exec 3<>/dev/tcp/93.184.216.34/80' || echo refused",
    );
    expect(port80.stdout).toContain("refused");
    // Every process's environment and command line, and every file of the guest's disk.
    const search = await exec(
      boundShell,
      `grep -l -a -e '${SECRET_PATTERN}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; grep -r -l -a -e '${SECRET_PATTERN}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; echo searched`,
    );
    expect(search.stdout.trim()).toBe("searched");
    // The search would have found it: the pattern matches the secret where it is.
    const control = await exec(
      boundShell,
      `printf '%s' '${SECRET.slice(0, 4)}''${SECRET.slice(4)}' > /tmp/control && grep -l -e '${SECRET_PATTERN}' /tmp/control`,
    );
    expect(control.stdout.trim()).toBe("/tmp/control");
  }, 180_000);
});
