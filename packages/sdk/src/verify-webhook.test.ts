import { randomBytes } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import {
  ConfigurationError,
  ShellsClient,
  WebhookVerificationError,
  verifyWebhook,
} from "./index.js";

const secret = `whsec_${randomBytes(32).toString("base64")}`;
const other = `whsec_${randomBytes(32).toString("base64")}`;
const body = JSON.stringify({
  type: "shell.created",
  timestamp: "2025-01-01T00:00:00.000Z",
  data: { orgId: "org-1" },
});

/** Headers as the server sends them, signed by each of `secrets` at `at`. */
function signed(secrets: string[], at = new Date(), id = "msg-1"): Record<string, string> {
  return {
    "webhook-id": id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": secrets.map((s) => new Webhook(s).sign(id, at, body)).join(" "),
  };
}

describe("verifyWebhook", () => {
  it("answers the payload of a delivery signed with the secret, from a string, bytes, Headers or Node's record", () => {
    const headers = signed([secret]);
    expect(verifyWebhook(body, headers, secret).type).toBe("shell.created");
    expect(verifyWebhook(new TextEncoder().encode(body), headers, secret).data.orgId).toBe("org-1");
    expect(verifyWebhook(body, new Headers(headers), secret).type).toBe("shell.created");
    const node = Object.fromEntries(
      Object.entries(headers).map(([k, v]) => [k.toUpperCase(), [v]]),
    );
    expect(verifyWebhook(body, node, secret).type).toBe("shell.created");
  });

  it("refuses a changed body, another secret, a replay from long ago and missing headers", () => {
    const headers = signed([secret]);
    const refuse = (fn: () => unknown) => {
      expect(fn).toThrow(WebhookVerificationError);
      try {
        fn();
      } catch (error) {
        expect(error).toMatchObject({ code: "invalid_signature", status: 0 });
      }
    };
    refuse(() => verifyWebhook(body.replace("org-1", "org-2"), headers, secret));
    refuse(() => verifyWebhook(body, headers, other));
    refuse(() => verifyWebhook(body, signed([secret], new Date(Date.now() - 10 * 60_000)), secret));
    refuse(() => verifyWebhook(body, { "webhook-id": "msg-1" }, secret));
  });

  it("accepts either secret during a rotation, whichever the delivery was signed with", () => {
    expect(verifyWebhook(body, signed([other, secret]), [secret]).type).toBe("shell.created");
    expect(verifyWebhook(body, signed([secret]), [other, secret]).type).toBe("shell.created");
  });

  it("says so when the secret is not a whsec_ secret", () => {
    expect(() => verifyWebhook(body, signed([secret]), "whsec_")).toThrow(ConfigurationError);
  });
});

describe("shells.webhooks", () => {
  it("sends each call to its route; create carries no idempotency key (its answer holds the secret)", async () => {
    const seen: string[] = [];
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: async (input, init) => {
        const request = new Request(input, init);
        const key = request.headers.get("idempotency-key");
        seen.push(
          `${request.method} ${new URL(request.url).pathname}${new URL(request.url).search}${key ? " (key)" : ""}`,
        );
        const answer = request.url.includes("deliveries?")
          ? { items: [], nextCursor: null }
          : request.method === "GET" && request.url.endsWith("/webhooks")
            ? { items: [] }
            : {};
        return new Response(JSON.stringify(answer), { status: 200 });
      },
    });
    await client.webhooks.create({ url: "https://hooks.example.com/", events: ["*"] });
    await client.webhooks.list();
    await client.webhooks.get("whk-1");
    await client.webhooks.rotateSecret("whk-1");
    await client.webhooks.deliveries("whk-1", { state: "failed" }).page();
    await client.webhooks.redeliver("whk-1", "whd-1");
    await client.webhooks.test("whk-1");
    await client.webhooks.delete("whk-1");
    expect(seen).toEqual([
      "POST /api/v1/webhooks",
      "GET /api/v1/webhooks",
      "GET /api/v1/webhooks/whk-1",
      "POST /api/v1/webhooks/whk-1/rotate",
      "GET /api/v1/webhooks/whk-1/deliveries?state=failed",
      "POST /api/v1/webhooks/whk-1/deliveries/whd-1/redeliver",
      "POST /api/v1/webhooks/whk-1/test",
      "DELETE /api/v1/webhooks/whk-1",
    ]);
  });
});
