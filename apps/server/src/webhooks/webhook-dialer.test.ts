import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { dialWebhook, literalDestinationDenial, WebhookDialError } from "./webhook-dialer.js";

let servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  servers = [];
});

/** A receiver on loopback that answers `status` and remembers what it was sent. */
async function receiver(status = 204, headers: Record<string, string> = {}) {
  const seen: { headers: IncomingMessage["headers"]; body: string }[] = [];
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      seen.push({ headers: request.headers, body });
      response.writeHead(status, headers).end("ok");
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, seen };
}

const request = (url: string) => ({
  url,
  body: '{"type":"shell.created"}',
  headers: { "content-type": "application/json", "webhook-id": "msg-1" },
});

/** A resolver that answers `addresses` for every name and counts its lookups. */
function resolverOf(addresses: string[]) {
  const lookups: string[] = [];
  return {
    lookups,
    resolve: async (host: string) => {
      lookups.push(host);
      return addresses;
    },
  };
}

async function refusal(promise: Promise<unknown>): Promise<WebhookDialError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WebhookDialError);
  return error as WebhookDialError;
}

describe("the webhook dialer", () => {
  it("refuses a name that resolves to loopback, sending nothing, unless the org allows that range", async () => {
    const hook = await receiver();
    const dns = resolverOf(["127.0.0.1"]);
    const url = `http://hooks.test:${hook.port}/in`;
    const refused = await refusal(
      dialWebhook(request(url), { resolve: dns.resolve, allowCidrs: [], timeoutMs: 2000 }),
    );
    expect(refused.reason).toBe("address_not_public");
    expect(refused.message).toContain("webhooks.allowCidrs");
    expect(hook.seen).toHaveLength(0);

    const sent = await dialWebhook(request(url), {
      resolve: dns.resolve,
      allowCidrs: ["127.0.0.1/32"],
      timeoutMs: 2000,
    });
    expect(sent.status).toBe(204);
    expect(hook.seen).toHaveLength(1);
    // Connected to the checked address, named as the URL names it; resolved once per delivery.
    expect(hook.seen[0]!.headers.host).toBe(`hooks.test:${hook.port}`);
    expect(hook.seen[0]!.body).toBe('{"type":"shell.created"}');
    expect(dns.lookups).toEqual(["hooks.test", "hooks.test"]);
  });

  it("refuses a name when any of its addresses is private, link-local or the metadata service", async () => {
    for (const addresses of [
      ["93.184.216.34", "10.0.0.5"],
      ["169.254.169.254"],
      ["::ffff:127.0.0.1"],
      ["fd00:ec2::254"],
    ]) {
      const dns = resolverOf(addresses);
      const refused = await refusal(
        dialWebhook(request("https://hooks.test/in"), {
          resolve: dns.resolve,
          allowCidrs: [],
          timeoutMs: 2000,
        }),
      );
      expect(refused.reason, addresses.join(",")).toBe("address_not_public");
    }
  });

  it("refuses IP literals outside the allowance before resolving anything", async () => {
    expect(literalDestinationDenial("http://127.0.0.1:8080/x", [])).toBe("address_not_public");
    expect(literalDestinationDenial("http://[::1]:8080/x", [])).toBe("address_not_public");
    expect(literalDestinationDenial("http://169.254.169.254/latest", [])).toBe(
      "address_not_public",
    );
    expect(literalDestinationDenial("http://127.0.0.1:8080/x", ["127.0.0.0/8"])).toBeNull();
    expect(literalDestinationDenial("https://hooks.example.com/x", [])).toBeNull();
    const dns = resolverOf([]);
    const refused = await refusal(
      dialWebhook(request("http://[::1]:9/x"), {
        resolve: dns.resolve,
        allowCidrs: ["127.0.0.0/8"],
        timeoutMs: 2000,
      }),
    );
    expect(refused.reason).toBe("address_not_public");
    expect(dns.lookups).toEqual([]);
  });

  it("follows no redirect: a 3xx is the endpoint's answer", async () => {
    const target = await receiver();
    const bouncer = await receiver(307, { location: `http://127.0.0.1:${target.port}/` });
    const sent = await dialWebhook(request(`http://127.0.0.1:${bouncer.port}/`), {
      resolve: resolverOf([]).resolve,
      allowCidrs: ["127.0.0.1/32"],
      timeoutMs: 2000,
    });
    expect(sent.status).toBe(307);
    expect(target.seen).toHaveLength(0);
  });

  it("gives up on an endpoint that does not answer in time, and on a name that does not resolve", async () => {
    const server = createServer(() => undefined); // accepts, never answers
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const slow = await refusal(
      dialWebhook(request(`http://127.0.0.1:${port}/`), {
        resolve: resolverOf([]).resolve,
        allowCidrs: ["127.0.0.1/32"],
        timeoutMs: 200,
      }),
    );
    expect(slow.reason).toBe("timeout");
    server.closeAllConnections();

    const missing = await refusal(
      dialWebhook(request("https://nowhere.test/"), {
        resolve: () => Promise.reject(new Error("ENOTFOUND")),
        allowCidrs: [],
        timeoutMs: 2000,
      }),
    );
    expect(missing.reason).toBe("unresolvable");
  });
});
