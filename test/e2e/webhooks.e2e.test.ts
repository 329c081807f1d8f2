import ShellsClient, {
  ValidationError,
  verifyWebhook,
  type WebhookCreated,
  type WebhookDelivery,
  type WebhookPayload,
} from "@l1fe/shells";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** The `shells` executable as npm links it (a launcher over the compiled apps/cli/dist/bin.js). */
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

/** Retries come quickly here: 200 ms after the first failed try, then 400 ms, … */
const FAST_RETRIES = { SHELLS_WEBHOOK_RETRY_BASE_MS: "200", SHELLS_WEBHOOK_MAX_ATTEMPTS: "5" };

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A webhook receiver on loopback: records every request as received (raw body, headers) and
 * answers the next status of `statuses`, then `status`.
 */
class Receiver {
  readonly seen: Received[] = [];
  status = 200;
  readonly #server: Server;

  constructor(readonly statuses: number[] = []) {
    this.#server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        this.seen.push({ headers: request.headers, body });
        response.writeHead(this.statuses.shift() ?? this.status).end();
      });
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    return this;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks/shells`;
  }

  /** What arrived, verified with the SDK helper (throws on a bad signature). */
  verified(secret: string | string[]): WebhookPayload[] {
    return this.seen.map((r) => verifyWebhook(r.body, r.headers, secret));
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `shells` binary against `server` with its owner key. */
function shells(server: TestServer, args: string[]): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
  });
}

async function shellsJson<T>(server: TestServer, args: string[]): Promise<T> {
  const run = await shells(server, [...args, "--json"]);
  expect(run, run.stderr).toMatchObject({ exitCode: 0 });
  return JSON.parse(run.stdout) as T;
}

function clientOf(server: TestServer): ShellsClient {
  return new ShellsClient({ baseUrl: server.url, token: server.token });
}

async function deliveriesOf(client: ShellsClient, webhookId: string): Promise<WebhookDelivery[]> {
  return client.webhooks.deliveries(webhookId).toArray();
}

const receivers: Receiver[] = [];
async function receiver(statuses: number[] = []): Promise<Receiver> {
  const r = await new Receiver(statuses).listen();
  receivers.push(r);
  return r;
}
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

describe("webhooks to a receiver on loopback", () => {
  let server: TestServer;
  let client: ShellsClient;
  beforeAll(async () => {
    server = await startTestServer({ env: FAST_RETRIES });
    client = clientOf(server);
  });
  afterAll(async () => {
    await server.close();
  });

  it("refuse a private address while the org's policy does not allow it", async () => {
    await client.policy.update({ webhooks: { allowCidrs: [] } });
    const hook = await receiver();
    const literal = await client.webhooks
      .create({ url: hook.url, events: ["*"] })
      .catch((e: unknown) => e);
    expect(literal).toBeInstanceOf(ValidationError);
    expect(literal).toMatchObject({ code: "destination_not_allowed", status: 422 });

    // A name is checked when it is sent: `localhost` resolves to loopback and is refused.
    const { webhook } = await client.webhooks.create({
      url: `http://localhost:${hook.port}/hooks`,
      events: ["shell.created"],
    });
    await client.create({ language: "bash" });
    await expect
      .poll(async () => (await deliveriesOf(client, webhook.id))[0]?.lastError ?? "", {
        timeout: 10_000,
      })
      .toMatch(/^address_not_public: localhost resolves to/);
    expect(hook.seen).toHaveLength(0);
    await client.webhooks.delete(webhook.id);
  });

  it("deliver a shell's lifecycle and a run's finished event with its result, signed so the SDK helper verifies them", async () => {
    await client.policy.update({ webhooks: { allowCidrs: ["127.0.0.1/32"] } });
    const hook = await receiver();
    const created = await shellsJson<WebhookCreated>(server, [
      "webhooks",
      "create",
      hook.url,
      "--event",
      "shell.*",
      "run.finished",
    ]);
    expect(created.secret).toMatch(/^whsec_/);

    const shell = await client.create({ language: "bash" });
    await client.action(shell.id, "stop");
    await client.delete(shell.id);
    const run = await client.run({
      language: "bash",
      command: ["sh", "-c", `echo '{"tests":12,"failed":0}' > "$SHELLS_RESULT"`],
    });
    await expect
      .poll(() => hook.verified(created.secret).some((p) => p.type === "run.finished"), {
        timeout: 15_000,
      })
      .toBe(true);

    const payloads = hook.verified(created.secret);
    const aboutShell = payloads.filter((p) => p.data.activity?.target?.id === shell.id);
    expect(aboutShell.map((p) => p.type)).toEqual([
      "shell.created",
      "shell.stopped",
      "shell.deleted",
    ]);
    const finished = payloads.find((p) => p.type === "run.finished")!;
    expect(finished.data.activity?.action).toBe("run.finish");
    expect(finished.data.run).toMatchObject({
      id: run.id,
      status: "succeeded",
      exitCode: 0,
      result: { tests: 12, failed: 0 },
    });
    // The message's activity event is the one in the org's history, hash and all.
    const recorded = await client
      .activity({ action: "run.finish", limit: 5 })
      .toArray()
      .then((events) => events.find((e) => e.id === finished.data.activity?.id));
    expect(recorded?.hash).toBe(finished.data.activity?.hash);
    // A body changed on the way does not verify.
    const tampered = { ...hook.seen[0]!, body: hook.seen[0]!.body.replace("shell", "shelL") };
    expect(() => verifyWebhook(tampered.body, tampered.headers, created.secret)).toThrow(
      /did not verify/,
    );
  });

  it("retry a receiver that fails until it answers, keep the log, redeliver and rotate", async () => {
    await client.policy.update({ webhooks: { allowCidrs: ["127.0.0.1/32"] } });
    const hook = await receiver([500, 500]);
    const { webhook, secret } = await client.webhooks.create({
      url: hook.url,
      events: ["shell.created"],
    });
    await client.create({ language: "bash" });
    await expect
      .poll(async () => (await deliveriesOf(client, webhook.id))[0]?.state, { timeout: 15_000 })
      .toBe("delivered");
    const log = await shellsJson<WebhookDelivery[]>(server, ["webhooks", "deliveries", webhook.id]);
    expect(log).toEqual([
      expect.objectContaining({
        eventType: "shell.created",
        state: "delivered",
        attempts: 3,
        lastStatus: 200,
      }),
    ]);
    expect(hook.seen).toHaveLength(3);
    expect(new Set(hook.seen.map((r) => r.headers["webhook-id"])).size).toBe(1);
    expect(hook.verified(secret)).toHaveLength(3);

    const rotated = await shellsJson<WebhookCreated>(server, ["webhooks", "rotate", webhook.id]);
    const again = await shellsJson<WebhookDelivery>(server, [
      "webhooks",
      "redeliver",
      webhook.id,
      log[0]!.id,
    ]);
    expect(again.redeliveryOf).toBe(log[0]!.id);
    await expect.poll(() => hook.seen.length, { timeout: 10_000 }).toBe(4);
    const redelivered = hook.seen[3]!;
    expect(redelivered.headers["webhook-id"]).toBe(log[0]!.messageId);
    // During the rotation's grace period both the new and the old secret verify it.
    expect(verifyWebhook(redelivered.body, redelivered.headers, rotated.secret).type).toBe(
      "shell.created",
    );
    expect(verifyWebhook(redelivered.body, redelivered.headers, secret).type).toBe("shell.created");

    const test = await shellsJson<WebhookDelivery>(server, ["webhooks", "test", webhook.id]);
    expect(test).toMatchObject({ eventType: "webhook.test", state: "pending" });
    await expect.poll(() => hook.seen.length, { timeout: 10_000 }).toBe(5);
    const tested = hook.seen[4]!;
    expect(verifyWebhook(tested.body, tested.headers, rotated.secret).type).toBe("webhook.test");
    await expect
      .poll(async () => (await deliveriesOf(client, webhook.id)).find((d) => d.id === test.id))
      .toMatchObject({ state: "delivered" });

    const listed = await shells(server, ["webhooks", "ls"]);
    expect(listed.stdout).toContain(webhook.id);
    expect(listed.stdout).not.toContain("whsec_");
    expect((await shells(server, ["webhooks", "rm", webhook.id])).exitCode).toBe(0);
    expect(await client.webhooks.list()).not.toContainEqual(
      expect.objectContaining({ id: webhook.id }),
    );
  });
});

describe("a pending delivery across a restart", () => {
  it("is delivered once the server is back", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "shells-webhooks-restart-"));
    const hook = await receiver();
    hook.status = 503;
    let server = await startTestServer({ dataDir, env: FAST_RETRIES });
    try {
      let client = clientOf(server);
      await client.policy.update({ webhooks: { allowCidrs: ["127.0.0.1/32"] } });
      const { webhook, secret } = await client.webhooks.create({
        url: hook.url,
        events: ["shell.created"],
      });
      const shell = await client.create({ language: "bash" });
      await expect.poll(() => hook.seen.length, { timeout: 10_000 }).toBeGreaterThan(0);
      expect((await deliveriesOf(client, webhook.id))[0]?.state).toBe("pending");

      await server.close();
      hook.status = 200;
      server = await startTestServer({ dataDir, env: FAST_RETRIES });
      client = clientOf(server);
      await expect
        .poll(async () => (await deliveriesOf(client, webhook.id))[0]?.state, {
          timeout: 15_000,
        })
        .toBe("delivered");
      const payloads = hook.verified(secret);
      expect(payloads.at(-1)?.data.activity?.target?.id).toBe(shell.id);
      expect(new Set(hook.seen.map((r) => r.headers["webhook-id"])).size).toBe(1);
    } finally {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
