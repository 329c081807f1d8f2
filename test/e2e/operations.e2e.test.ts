import ShellsClient from "@l1fe/shells";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  parsePrometheusText,
  sumSamples,
} from "../../apps/server/src/test-support/prometheus-text.js";
import { startTestServer, type TestServer } from "./harness.js";

const METRICS_TOKEN = "e2e-metrics-token-0123456789";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({
    env: {
      SHELLS_METRICS_TOKEN: METRICS_TOKEN,
      SHELLS_RATE_LIMIT_PER_KEY: "10",
      SHELLS_RATE_LIMIT_WINDOW_SECONDS: "1",
    },
  });
});
afterAll(async () => {
  await server.close();
});

async function scrape() {
  const res = await fetch(`${server.url}/metrics`, {
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
}

describe("operating a server", () => {
  it("serves /metrics that parse as Prometheus text and move as shells come and go", async () => {
    const client = new ShellsClient({ baseUrl: server.url, token: server.token });
    const before = await scrape();
    const shell = await client.create({ language: "bash" });
    await client.exec(shell.id, { command: ["sleep", "5"], timeoutMs: 50 });
    const during = await scrape();
    expect(sumSamples(during, "shells_shells", { status: "running" })).toBe(
      sumSamples(before, "shells_shells", { status: "running" }) + 1,
    );
    expect(sumSamples(during, "shells_exec_kills_total", { reason: "wall_clock" })).toBe(
      sumSamples(before, "shells_exec_kills_total", { reason: "wall_clock" }) + 1,
    );
    await client.delete(shell.id);
    const after = await scrape();
    expect(sumSamples(after, "shells_shells", { status: "running" })).toBe(
      sumSamples(before, "shells_shells", { status: "running" }),
    );
    expect(sumSamples(after, "shells_shells", { status: "deleted" })).toBe(
      sumSamples(before, "shells_shells", { status: "deleted" }) + 1,
    );
    const unauthorised = await fetch(`${server.url}/metrics`, {
      headers: { authorization: `Bearer ${server.token}` },
    });
    expect(unauthorised.status).toBe(401);
    expect(unauthorised.headers.get("www-authenticate")).toBe('Bearer realm="shells"');
  });

  it("rate-limits a key, and the SDK waits out Retry-After instead of failing", async () => {
    // Raw requests past the key's budget are refused...
    let refused: Response | undefined;
    for (let i = 0; i < 30 && !refused; i++) {
      const res = await fetch(`${server.url}/api/v1/me`, {
        headers: { authorization: `Bearer ${server.token}` },
      });
      if (res.status === 429) refused = res;
    }
    expect(refused?.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await refused!.json()) as { error: { code: string } }).error.code).toBe(
      "rate_limited",
    );
    // ...while the SDK, over the same budget, retries until each request is served.
    const client = new ShellsClient({ baseUrl: server.url, token: server.token });
    for (let i = 0; i < 25; i++) expect((await client.whoami()).role).toBe("owner");
  });
});
