/**
 * Container shells with an egress proxy claimed from the warm pool's `:internet` sandboxes
 * (`SHELLS_CONTAINER_POOL=bash:internet=2`), through a real server and its real egress proxy: an
 * `internet` shell and a sealed shell granted a binding both start on a pooled sandbox whose
 * forwarder was started before either shell existed, and each reaches its own proxy — the internet
 * shell its allowlist (and is denied the metadata address), the bound shell its binding (and the
 * secret is nowhere in the shell).
 */
import { randomBytes } from "node:crypto";
import { lstatSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { direct, startEgressFixture, viaProxy, type EgressFixture } from "./egress-fixture.js";
import { call } from "./harness.js";

const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
const SECRET = `sk_live_${randomBytes(18).toString("hex")}`;
/** The secret as a pattern that matches it but not itself: the search's own command line. */
const SECRET_PATTERN = `s[k]${SECRET.slice(2)}`;

interface PoolReport {
  languages: { language: string; internet: boolean; ready: number; target: number }[];
}

describe.runIf(hostReport.available)("container shells with a proxy, from the warm pool", () => {
  let fixture: EgressFixture | undefined;
  let api: { url: string; token: string };
  let exec: EgressFixture["exec"];
  let internetShell = "";
  let boundShell = "";

  /** Whether the shell was claimed from the pool: its state dir is a link to a pooled sandbox's. */
  const claimed = (shellId: string) =>
    lstatSync(join(fixture!.dataDir, "container", "shells", shellId)).isSymbolicLink();

  beforeAll(async () => {
    fixture = await startEgressFixture({
      name: "container-pool-egress",
      secret: SECRET,
      env: { SHELLS_IMAGES_DIR: IMAGES, SHELLS_CONTAINER_POOL: "bash:internet=2" },
    });
    ({ api, exec } = fixture);
    // The pool is full before the shells are asked for (availability is cached up to 30 s).
    const deadline = Date.now() + 90_000;
    for (;;) {
      const ready = await call<{ runtimes: { runtime: string; sandboxPool?: PoolReport }[] }>(
        api,
        "GET",
        "/readyz",
      );
      const pool = ready.body.runtimes.find((r) => r.runtime === "container")?.sandboxPool;
      if (pool?.languages[0]?.ready === 2) {
        expect(pool.languages).toEqual([{ language: "bash", internet: true, ready: 2, target: 2 }]);
        break;
      }
      if (Date.now() > deadline) throw new Error(`the pool did not fill: ${JSON.stringify(pool)}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const container = { language: "bash", runtime: "container" };
    ({ internetShell, boundShell } = await fixture.createShells({
      internet: container,
      bound: container,
    }));
  }, 180_000);

  afterAll(async () => {
    await fixture?.close();
  }, 120_000);

  it("serves an internet shell from a pooled sandbox that reaches its allowlist through its own proxy", async () => {
    expect(claimed(internetShell)).toBe(true);
    const allowed = await exec(
      internetShell,
      `echo "proxy=$HTTP_PROXY"; ${viaProxy(`GET http://allowed.test:${fixture!.upstreamPort}/hello HTTP/1.1`, `Host: allowed.test:${fixture!.upstreamPort}\\r\\n`)}`,
    );
    expect(allowed.stdout).toContain("proxy=http://127.0.0.1:3128");
    expect(allowed.stdout).toContain("upstream saw /hello");
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
    // Past the proxy, nothing: any other port is refused in the shell itself.
    const other = await exec(
      internetShell,
      "timeout 10 bash -c 'exec 3<>/dev/tcp/169.254.169.254/8080' || echo refused",
    );
    expect(other.stdout).toContain("refused");
  }, 120_000);

  it("serves a sealed shell granted a binding from the same kind of sandbox, and the secret is nowhere in it", async () => {
    expect(claimed(boundShell)).toBe(true);
    const called = await exec(
      boundShell,
      `echo "url=$SHELLS_BINDING_ECHO_URL"; ${viaProxy("GET /bindings/echo/v1/echo HTTP/1.1", "Host: 127.0.0.1:3128\\r\\n")}`,
    );
    expect(called.stdout).toContain("url=http://127.0.0.1:3128/bindings/echo");
    expect(called.stdout).toContain("authorized");
    expect(fixture!.securedAuth).toContain(`Bearer ${SECRET}`);
    // Its proxy is its own: a sealed shell's reaches nothing but its bindings.
    const refused = await exec(
      boundShell,
      viaProxy(
        `GET http://allowed.test:${fixture!.upstreamPort}/hello HTTP/1.1`,
        `Host: allowed.test:${fixture!.upstreamPort}\\r\\n`,
      ),
    );
    expect(refused.stdout).toMatch(/^HTTP\/1.1 403/);
    const search = await exec(
      boundShell,
      `grep -l -a -e '${SECRET_PATTERN}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; grep -r -l -a -e '${SECRET_PATTERN}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; echo searched`,
    );
    expect(search.stdout.trim()).toBe("searched");
  }, 120_000);
});
