import type { WebhookDelivery, WebhookPayload } from "@shells/contract";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
let servers: Server[] = [];
afterEach(async () => {
  await t?.close();
  t = undefined;
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  servers = [];
});

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A receiver on loopback answering each request with the next status of `statuses` (then 200). */
async function receiver(statuses: number[] = []) {
  const seen: Received[] = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      seen.push({ headers: request.headers, body });
      response.writeHead(statuses.shift() ?? 200).end();
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, seen };
}

/** An app that sends its outbox every 50 ms and retries after 50 ms, 100 ms, … */
async function app(env: Record<string, string> = {}) {
  t = await createTestApp({
    webhookPollIntervalMs: 50,
    env: { SHELLS_WEBHOOK_RETRY_BASE_MS: "50", ...env },
  });
  return t;
}

async function allowLoopback(app: TestApp) {
  const res = await app.call("PATCH", "/api/v1/org/policy", {
    webhooks: { allowCidrs: ["127.0.0.1/32"] },
  });
  expect(res.statusCode, res.body).toBe(200);
}

async function createWebhook(app: TestApp, url: string, events: string[] = ["*"]) {
  const res = await app.call("POST", "/api/v1/webhooks", { url, events });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ webhook: { id: string }; secret: string }>();
}

async function deliveries(app: TestApp, webhookId: string): Promise<WebhookDelivery[]> {
  const res = await app.call("GET", `/api/v1/webhooks/${webhookId}/deliveries`);
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ items: WebhookDelivery[] }>().items;
}

function verify(secret: string, received: Received): WebhookPayload {
  return new StandardWebhook(secret).verify(
    received.body,
    received.headers as Record<string, string>,
  ) as WebhookPayload;
}

describe("webhook endpoints", () => {
  it("show the signing secret once, keep it sealed, and record only the URL's origin", async () => {
    const a = await app();
    const url = "https://hooks.example.com/in?token=url-secret-123";
    // An Idempotency-Key is not honoured here: a stored replay would hold the secret in clear.
    const created = await a.call(
      "POST",
      "/api/v1/webhooks",
      { url, events: ["shell.*"] },
      { "idempotency-key": "create-hook-1" },
    );
    expect(created.statusCode, created.body).toBe(201);
    const { webhook, secret } = created.json<{ webhook: { id: string }; secret: string }>();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const listed = await a.call("GET", "/api/v1/webhooks");
    expect(listed.json().items).toEqual([expect.objectContaining({ id: webhook.id, url })]);
    expect(listed.body).not.toContain(secret);
    expect((await a.call("GET", `/api/v1/webhooks/${webhook.id}`)).body).not.toContain(secret);
    // The store holds the secret sealed, never in plain text (the URL is there: the check looks).
    const stored = Buffer.concat(
      ["shells.db", "shells.db-wal"]
        .map((name) => join(a.dataDir, name))
        .filter((path) => existsSync(path))
        .map((path) => readFileSync(path)),
    );
    expect(stored.includes(Buffer.from("url-secret-123"))).toBe(true);
    expect(stored.includes(Buffer.from(secret.slice(6)))).toBe(false);
    const history = (await a.call("GET", "/api/v1/activity?action=webhook.")).body;
    expect(history).toContain("https://hooks.example.com");
    expect(history).not.toContain("url-secret-123");
    expect(history).not.toContain(secret);
  });

  it("are for admins only, and another org's endpoint is not found", async () => {
    const a = await app();
    const { webhook } = await createWebhook(a, "https://hooks.example.com/in");
    const { addPrincipal } = await import("../test-support/test-app.js");
    const orgId = (await a.call("GET", "/api/v1/me")).json().orgId as string;
    const dev = await addPrincipal(a.store, {
      orgId,
      role: "developer",
      scopes: ["shells:instances:read", "shells:instances:control"],
    });
    const asDev = await a.call("GET", "/api/v1/webhooks", undefined, {
      authorization: `Bearer ${dev.token}`,
    });
    expect(asDev.statusCode).toBe(403);
    const stranger = await addPrincipal(a.store, {
      orgId: "org-other",
      role: "owner",
      scopes: ["shells:instances:read", "shells:instances:control"],
    });
    const foreign = await a.call("GET", `/api/v1/webhooks/${webhook.id}`, undefined, {
      authorization: `Bearer ${stranger.token}`,
    });
    expect(foreign.statusCode).toBe(404);
    expect(foreign.json().error.code).toBe("not_found");
  });

  it("refuse a private IP literal unless the org allows its range", async () => {
    const a = await app();
    for (const url of ["http://127.0.0.1:9/x", "http://169.254.169.254/x", "http://[::1]/x"]) {
      const res = await a.call("POST", "/api/v1/webhooks", { url, events: ["*"] });
      expect(res.statusCode, url).toBe(422);
      expect(res.json().error.code).toBe("destination_not_allowed");
    }
    await allowLoopback(a);
    await createWebhook(a, "http://127.0.0.1:9/x");
  });

  it("refuse bad URLs and unknown event types with 400", async () => {
    const a = await app();
    for (const body of [
      { url: "ftp://hooks.example.com/", events: ["*"] },
      { url: "https://user:pw@hooks.example.com/", events: ["*"] },
      { url: "https://hooks.example.com/", events: ["shell.exploded"] },
      { url: "https://hooks.example.com/", events: [] },
    ]) {
      const res = await a.call("POST", "/api/v1/webhooks", body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().error.code).toBe("validation_failed");
    }
  });
});

describe("webhook deliveries", () => {
  it("queue one delivery per subscribed endpoint with each event, and send it signed", async () => {
    const a = await app();
    await allowLoopback(a);
    const hook = await receiver();
    const everything = await createWebhook(a, hook.url, ["shell.*"]);
    const runsOnly = await createWebhook(a, "https://hooks.example.com/runs", ["run.finished"]);
    const shell = (await a.call("POST", "/api/v1/shells", { language: "bash" })).json().id;
    await expect.poll(() => hook.seen.length).toBe(1);
    const payload = verify(everything.secret, hook.seen[0]!);
    expect(payload.type).toBe("shell.created");
    expect(payload.data.activity).toMatchObject({
      action: "shell.create",
      target: { type: "shell", id: shell },
    });
    expect(hook.seen[0]!.headers["webhook-id"]).toMatch(/^msg-/);
    await expect
      .poll(async () => (await deliveries(a, everything.webhook.id))[0]?.state)
      .toBe("delivered");
    expect(await deliveries(a, runsOnly.webhook.id)).toEqual([]);
    // A wrong secret does not verify.
    expect(() =>
      verify(`whsec_${Buffer.alloc(32, 1).toString("base64")}`, hook.seen[0]!),
    ).toThrow();
  });

  it("retry a failing receiver with backoff until it answers 2xx, and give up after the last try", async () => {
    const a = await app({ SHELLS_WEBHOOK_MAX_ATTEMPTS: "3" });
    await allowLoopback(a);
    const flaky = await receiver([500, 503]);
    const down = await receiver([500, 500, 500, 500]);
    const { webhook: recovering } = await createWebhook(a, flaky.url, ["shell.created"]);
    const { webhook: failing } = await createWebhook(a, down.url, ["shell.created"]);
    await a.call("POST", "/api/v1/shells", { language: "bash" });
    await expect
      .poll(async () => (await deliveries(a, recovering.id))[0]?.state, { timeout: 5000 })
      .toBe("delivered");
    const delivered = (await deliveries(a, recovering.id))[0]!;
    expect(delivered).toMatchObject({ attempts: 3, lastStatus: 200, lastError: null });
    expect(flaky.seen).toHaveLength(3);
    // Every try is the same message: one webhook-id.
    expect(new Set(flaky.seen.map((r) => r.headers["webhook-id"])).size).toBe(1);
    await expect
      .poll(async () => (await deliveries(a, failing.id))[0]?.state, { timeout: 5000 })
      .toBe("failed");
    expect((await deliveries(a, failing.id))[0]).toMatchObject({
      attempts: 3,
      lastStatus: 500,
      nextAttemptAt: null,
      lastError: "the endpoint answered HTTP 500",
    });
    expect(down.seen).toHaveLength(3);
  });

  it("refuse a name that resolves to loopback without the org's allowance, and say why in the log", async () => {
    const a = await app({ SHELLS_WEBHOOK_MAX_ATTEMPTS: "1" });
    const hook = await receiver();
    const port = new URL(hook.url).port;
    const { webhook } = await createWebhook(a, `http://localhost:${port}/hook`);
    await a.call("POST", "/api/v1/shells", { language: "bash" });
    await expect.poll(async () => (await deliveries(a, webhook.id))[0]?.state).toBe("failed");
    const [refused] = await deliveries(a, webhook.id);
    expect(refused!.lastError).toMatch(/^address_not_public: localhost resolves to/);
    expect(refused!.lastStatus).toBeNull();
    expect(hook.seen).toHaveLength(0);
  });

  it("sign with both secrets during a rotation's grace period; redeliver sends the same message again", async () => {
    const a = await app();
    await allowLoopback(a);
    const hook = await receiver();
    const first = await createWebhook(a, hook.url, ["shell.deleted"]);
    const rotated = await a.call("POST", `/api/v1/webhooks/${first.webhook.id}/rotate`);
    expect(rotated.statusCode, rotated.body).toBe(200);
    const second = rotated.json<{ secret: string; webhook: { previousSecretExpiresAt: string } }>();
    expect(second.secret).not.toBe(first.secret);
    expect(Date.parse(second.webhook.previousSecretExpiresAt)).toBeGreaterThan(Date.now());
    const shell = (await a.call("POST", "/api/v1/shells", { language: "bash" })).json().id;
    await a.call("DELETE", `/api/v1/shells/${shell}`);
    await expect.poll(() => hook.seen.length).toBe(1);
    expect(String(hook.seen[0]!.headers["webhook-signature"]).split(" ")).toHaveLength(2);
    expect(verify(second.secret, hook.seen[0]!).type).toBe("shell.deleted");
    expect(verify(first.secret, hook.seen[0]!).type).toBe("shell.deleted");

    await expect
      .poll(async () => (await deliveries(a, first.webhook.id))[0]?.state)
      .toBe("delivered");
    const [original] = await deliveries(a, first.webhook.id);
    const again = await a.call(
      "POST",
      `/api/v1/webhooks/${first.webhook.id}/deliveries/${original!.id}/redeliver`,
    );
    expect(again.statusCode, again.body).toBe(201);
    expect(again.json()).toMatchObject({ redeliveryOf: original!.id, state: "pending" });
    await expect.poll(() => hook.seen.length).toBe(2);
    expect(hook.seen[1]!.headers["webhook-id"]).toBe(original!.messageId);
    expect(hook.seen[1]!.body).toBe(hook.seen[0]!.body);
  });

  it("send a signed webhook.test message to the one endpoint tested, whatever it subscribed to", async () => {
    const a = await app();
    await allowLoopback(a);
    const hook = await receiver();
    const other = await receiver();
    const tested = await createWebhook(a, hook.url, ["run.finished"]);
    await createWebhook(a, other.url, ["*"]);
    const sent = await a.call("POST", `/api/v1/webhooks/${tested.webhook.id}/test`);
    expect(sent.statusCode, sent.body).toBe(201);
    const delivery = sent.json<WebhookDelivery>();
    expect(delivery).toMatchObject({
      webhookId: tested.webhook.id,
      eventType: "webhook.test",
      state: "pending",
    });
    await expect.poll(() => hook.seen.length).toBe(1);
    const payload = verify(tested.secret, hook.seen[0]!);
    expect(payload.type).toBe("webhook.test");
    expect(payload.data.activity).toMatchObject({
      action: "webhook.test",
      target: { type: "webhook", id: tested.webhook.id },
      id: delivery.activityId,
    });
    await expect
      .poll(async () => (await deliveries(a, tested.webhook.id))[0])
      .toMatchObject({ id: delivery.id, state: "delivered", lastStatus: 200 });
    expect(other.seen).toHaveLength(0);
    const missing = await a.call("POST", "/api/v1/webhooks/wh-nope/test");
    expect(missing.statusCode).toBe(404);
  });

  it("hand each signed checkpoint to the endpoints that subscribed to audit.*", async () => {
    const a = await app();
    await allowLoopback(a);
    const hook = await receiver();
    const other = await receiver();
    const { secret } = await createWebhook(a, hook.url, ["audit.*"]);
    await createWebhook(a, other.url, ["shell.*"]);
    const signed = await a.call("POST", "/api/v1/audit/checkpoints");
    expect(signed.statusCode, signed.body).toBe(200);
    const checkpoint = signed.json<{ id: string; treeSize: number; signature: string }>();
    await expect.poll(() => hook.seen.length).toBe(1);
    const payload = verify(secret, hook.seen[0]!);
    expect(payload.type).toBe("audit.checkpoint");
    // The checkpoint as the API answered it: a verifier can take it as it is.
    expect(payload.data.checkpoint).toEqual(checkpoint);
    expect(payload.data.activity).toBeUndefined();
    const [delivery] = await deliveries(
      a,
      (await a.call("GET", "/api/v1/webhooks"))
        .json<{
          items: { id: string; url: string }[];
        }>()
        .items.find((w) => w.url === hook.url)!.id,
    );
    expect(delivery).toMatchObject({ eventType: "audit.checkpoint", activityId: checkpoint.id });
    // A checkpoint of an unchanged tree is the same one: nothing new is sent.
    await a.call("POST", "/api/v1/audit/checkpoints");
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(hook.seen).toHaveLength(1);
    expect(other.seen).toHaveLength(0);
  });

  it("carry a finished run's structured result", async () => {
    const a = await app();
    await allowLoopback(a);
    const hook = await receiver();
    const { secret } = await createWebhook(a, hook.url, ["run.finished"]);
    const run = await a.call("POST", "/api/v1/runs", {
      language: "bash",
      command: ["sh", "-c", `echo '{"answer":42}' > "$SHELLS_RESULT"`],
    });
    expect(run.statusCode, run.body).toBe(201);
    await expect.poll(() => hook.seen.length, { timeout: 10_000 }).toBe(1);
    const payload = verify(secret, hook.seen[0]!);
    expect(payload.type).toBe("run.finished");
    expect(payload.data.run).toMatchObject({
      id: run.json().id,
      status: "succeeded",
      exitCode: 0,
      result: { answer: 42 },
    });
  });

  it("are dropped with their endpoint", async () => {
    const a = await createTestApp(); // outbox not sent: deliveries stay pending
    t = a;
    const { webhook } = await createWebhook(a, "https://hooks.example.com/in");
    await a.call("POST", "/api/v1/shells", { language: "bash" });
    expect(await deliveries(a, webhook.id)).toHaveLength(1);
    expect((await a.call("DELETE", `/api/v1/webhooks/${webhook.id}`)).statusCode).toBe(200);
    const left = await a.store.db.selectFrom("webhook_deliveries").selectAll().execute();
    expect(left).toEqual([]);
    expect((await a.call("GET", `/api/v1/webhooks/${webhook.id}`)).statusCode).toBe(404);
  });
});

describe("the delivery log", () => {
  it("keeps finished deliveries for 30 days and pending ones until they are sent", async () => {
    const first = await createTestApp();
    const { webhook } = await createWebhook(first, "https://hooks.example.com/in");
    const orgId = (await first.call("GET", "/api/v1/me")).json().orgId as string;
    const day = 24 * 60 * 60 * 1000;
    const row = (id: string, state: "pending" | "delivered" | "failed", ageDays: number) => ({
      id,
      org_id: orgId,
      webhook_id: webhook.id,
      message_id: `msg-${id}`,
      event_type: "shell.created",
      activity_id: "ev-1",
      payload: "{}",
      state,
      attempts: 1,
      next_attempt_at: state === "pending" ? new Date(Date.now() + day).toISOString() : null,
      last_attempt_at: null,
      last_status: null,
      last_error: null,
      created_at: new Date(Date.now() - ageDays * day).toISOString(),
      delivered_at: null,
      redelivery_of: null,
    });
    await first.store.db
      .insertInto("webhook_deliveries")
      .values([
        row("old-delivered", "delivered", 31),
        row("old-failed", "failed", 31),
        row("old-pending", "pending", 31),
        row("recent-delivered", "delivered", 29),
      ])
      .execute();
    await first.close({ remove: false });

    t = await createTestApp({ dataDir: first.dataDir, webhookPollIntervalMs: 50 });
    await expect
      .poll(async () =>
        (
          await t!.store.db.selectFrom("webhook_deliveries").select("id").orderBy("id").execute()
        ).map((r) => r.id),
      )
      .toEqual(["old-pending", "recent-delivered"]);
  });
});
