import ShellsClient, { type Shell } from "@l1fe/shells";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, startTestServer, type TestServer } from "./harness.js";

/** p-th percentile of sorted milliseconds. */
const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;

/** Every shell the server's store holds, by status. */
async function statuses(server: TestServer): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const page = await call<{ items: { status: string }[] }>(
    server,
    "GET",
    "/api/v1/shells?limit=200",
  );
  for (const shell of page.body.items) counts[shell.status] = (counts[shell.status] ?? 0) + 1;
  return counts;
}

/** A raw create with its own idempotency key, so no client retry hides a refusal. */
async function rawCreate(server: TestServer, key: string) {
  const res = await fetch(`${server.url}/api/v1/shells`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${server.token}`,
      "content-type": "application/json",
      "idempotency-key": key,
    },
    body: JSON.stringify({ language: "bash" }),
  });
  return {
    status: res.status,
    retryAfter: res.headers.get("retry-after"),
    body: (await res.json()) as {
      id?: string;
      status?: string;
      error?: { code: string; details?: Record<string, unknown> };
    },
  };
}

describe("a burst of creates on real container shells", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer({
      backend: "container",
      // Room for the whole burst whatever this host's memory; the queue bounds how many start at
      // once (the default slots), and waits long enough for a loaded test host.
      env: {
        SHELLS_HOST_MEMORY_MB: String(100 * 512),
        SHELLS_MEMORY_OVERCOMMIT: "1",
        SHELLS_CREATE_QUEUE_TIMEOUT_MS: "120000",
      },
    });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("100 concurrent creates within capacity all answer running, none is left provisioning or error", async () => {
    const shells = new ShellsClient({ baseUrl: server.url, token: server.token, maxRetries: 0 });
    const times: number[] = [];
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, async () => {
        const started = performance.now();
        const shell = await shells.create({ language: "bash" });
        times.push(performance.now() - started);
        return shell;
      }),
    );
    const failures = results.filter((r) => r.status === "rejected");
    expect(failures.map((f) => String(f.reason))).toEqual([]);
    const made = results.map((r) => (r as PromiseFulfilledResult<Shell>).value);
    expect(made.every((s) => s.status === "running")).toBe(true);
    times.sort((a, b) => a - b);
    console.log(
      `100 concurrent creates: p50 ${percentile(times, 50).toFixed(0)} ms, p99 ${percentile(times, 99).toFixed(0)} ms`,
    );
    expect(await statuses(server)).toEqual({ running: 100 });
    const exec = await shells.exec(made[99]!.id, { command: ["sh", "-c", "echo ok"] });
    expect(exec.stdout).toBe("ok\n");
    await Promise.all(made.map((s) => shells.delete(s.id)));
  }, 300_000);
});

describe("creates past the host's capacity", () => {
  let server: TestServer;

  beforeAll(async () => {
    // Four default shells (512 MiB each) fill this host's shell memory.
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_HOST_MEMORY_MB: "2048", SHELLS_MEMORY_OVERCOMMIT: "1" },
    });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("answers 503 capacity_unavailable with Retry-After, leaves no half-made shell, and frees the key for a retry that succeeds once capacity is back", async () => {
    const keys = Array.from({ length: 10 }, () => randomUUID());
    const answers = await Promise.all(keys.map((key) => rawCreate(server, key)));
    const made = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 503);
    expect(made).toHaveLength(4);
    expect(refused).toHaveLength(6);
    expect(made.every((a) => a.body.status === "running")).toBe(true);
    for (const answer of refused) {
      expect(answer.body.error?.code).toBe("capacity_unavailable");
      expect(answer.body.error?.details).toMatchObject({ reason: "memory", budgetMb: 2048 });
      expect(Number(answer.retryAfter)).toBeGreaterThanOrEqual(1);
    }
    // Nothing of a refused create exists: four running shells, and only their creates recorded.
    expect(await statuses(server)).toEqual({ running: 4 });
    const events = await call<{ items: { action: string }[] }>(
      server,
      "GET",
      "/api/v1/activity?action=shell.create&limit=100",
    );
    expect(events.body.items).toHaveLength(4);

    // A refused key is free: once a shell is deleted, its retry makes the shell.
    const retryKey = keys[answers.findIndex((a) => a.status === 503)]!;
    const gone = await call(server, "DELETE", `/api/v1/shells/${made[0]!.body.id!}`);
    expect(gone.status).toBeLessThan(300);
    const retried = await rawCreate(server, retryKey);
    expect(retried.status).toBe(201);
    expect(retried.body.status).toBe("running");
    expect(await statuses(server)).toEqual({ running: 4 });

    // A stopped shell gives its memory back, and starting it again asks for it like a create.
    const stopped = retried.body.id!;
    const stop = await call(server, "POST", `/api/v1/shells/${stopped}/actions/stop`, {});
    expect(stop.status).toBeLessThan(300);
    expect((await rawCreate(server, randomUUID())).status).toBe(201);
    const start = await call<{ error: { code: string } }>(
      server,
      "POST",
      `/api/v1/shells/${stopped}/actions/start`,
      {},
    );
    expect(start.status).toBe(503);
    expect(start.body.error.code).toBe("capacity_unavailable");
    expect(await statuses(server)).toEqual({ running: 4, stopped: 1 });
  }, 180_000);
});

describe("the SDK against a host that starts one shell at a time", () => {
  let server: TestServer;

  beforeAll(async () => {
    // One provisioning slot and (almost) no queue: every create that arrives while another starts
    // is refused with Retry-After.
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_MAX_PROVISIONING: "1", SHELLS_CREATE_QUEUE_TIMEOUT_MS: "1" },
    });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("retries a refused create with the same idempotency key after Retry-After, so a burst ends with every shell made once", async () => {
    const refusals: string[] = [];
    const counting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (response.status === 503) refusals.push(response.headers.get("retry-after") ?? "");
      return response;
    };
    const shells = new ShellsClient({
      baseUrl: server.url,
      token: server.token,
      fetch: counting,
      maxRetries: 20,
    });
    const made = await Promise.all(
      Array.from({ length: 4 }, () => shells.create({ language: "bash" })),
    );
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.every((seconds) => Number(seconds) >= 1)).toBe(true);
    expect(made.every((shell) => shell.status === "running")).toBe(true);
    expect(new Set(made.map((shell) => shell.id)).size).toBe(4);
    expect(await statuses(server)).toEqual({ running: 4 });
  }, 180_000);
});
