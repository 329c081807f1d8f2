import { activityEventHash, GENESIS_HASH, type ActivityEvent, type Shell } from "@shells/contract";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  AuthenticationError,
  ConfigurationError,
  ConfirmationRequiredError,
  ConflictError,
  ConnectionError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ServerError,
  ShellsClient,
  ShellsError,
  ValidationError,
} from "./index.js";

/** A `fetch` answered in-process by `handler`: a stand-in server, seen through its responses. */
function serve(handler: (request: Request) => Response | Promise<Response>): typeof fetch {
  return async (input, init) => handler(new Request(input, init));
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function errorResponse(status: number, code: string, message = "nope"): Response {
  return json({ error: { code, message, details: { hint: 1 }, requestId: "req-1" } }, status);
}

function shell(id: string): Shell {
  return {
    id,
    name: id,
    project: "default",
    status: "running",
    statusReason: null,
    language: "bash",
    runtime: "container",
    network: "sealed",
    region: "local",
    resources: { cpu: 1, memoryMb: 512, pids: 256, diskMb: 1024 },
    envKeys: [],
    secretEnvKeys: [],
    backend: "simulator",
    imageVersion: null,
    isolation: null,
    ttlSeconds: null,
    expiresAt: null,
    createdAt: "2025-01-01T00:00:00.000Z",
    updatedAt: "2025-01-01T00:00:00.000Z",
  };
}

const base = { baseUrl: "http://shells.test", token: "tok" };

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("ShellsClient configuration", () => {
  it("refuses to start without a base URL and says how to give one", () => {
    vi.stubEnv("SHELLS_URL", "");
    expect(() => new ShellsClient({ token: "t" })).toThrow(ConfigurationError);
    expect(() => new ShellsClient({ token: "t" })).toThrow(/SHELLS_URL/);
  });

  it("refuses to start without a token and says how to give one", () => {
    vi.stubEnv("SHELLS_API_TOKEN", "");
    expect(() => new ShellsClient({ baseUrl: "http://x" })).toThrow(/SHELLS_API_TOKEN/);
  });

  it("takes the base URL and token from SHELLS_URL and SHELLS_API_TOKEN", async () => {
    vi.stubEnv("SHELLS_URL", "http://from-env.test/");
    vi.stubEnv("SHELLS_API_TOKEN", "env-token");
    const seen: string[] = [];
    const client = new ShellsClient({
      fetch: serve((request) => {
        seen.push(`${request.url} ${request.headers.get("authorization")}`);
        return json(shell("s1"));
      }),
    });
    await client.get("s1");
    expect(seen).toEqual(["http://from-env.test/api/v1/shells/s1 Bearer env-token"]);
  });
});

describe("ShellsClient errors", () => {
  it.each([
    [401, "unauthenticated", AuthenticationError],
    [403, "forbidden", PermissionDeniedError],
    [404, "shell_not_found", NotFoundError],
    [409, "invalid_state", ConflictError],
    [409, "approval_closed", ConflictError],
    [409, "last_owner", ConflictError],
    [428, "confirmation_required", ConfirmationRequiredError],
    [403, "entitlement_required", PermissionDeniedError],
    [400, "validation_failed", ValidationError],
    [422, "runtime_unavailable", ValidationError],
    [422, "below_isolation_floor", ValidationError],
    [413, "payload_too_large", ValidationError],
    [429, "rate_limited", RateLimitError],
    [500, "internal", ServerError],
    [502, "backend_failed", ServerError],
  ] as const)(
    "turns HTTP %i %s into its error class, keeping code, details and request id",
    async (status, code, ErrorClass) => {
      const client = new ShellsClient({
        ...base,
        maxRetries: 0,
        fetch: serve(() => errorResponse(status, code)),
      });
      const error = await client.get("x").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ErrorClass);
      expect(error).toBeInstanceOf(ShellsError);
      expect(error).toMatchObject({
        code,
        status,
        message: "nope",
        details: { hint: 1 },
        requestId: "req-1",
      });
    },
  );

  it("turns an HTML error page into a ServerError that quotes what came back", async () => {
    const client = new ShellsClient({
      ...base,
      fetch: serve(() => new Response("<html>Bad Gateway</html>", { status: 502 })),
    });
    const error = await client.get("x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServerError);
    expect(error).toMatchObject({ code: "unexpected_response", status: 502 });
    expect((error as Error).message).toContain("Bad Gateway");
  });

  it("turns a 200 that is not JSON into a ServerError", async () => {
    const client = new ShellsClient({
      ...base,
      fetch: serve(() => new Response("hello", { status: 200 })),
    });
    await expect(client.whoami()).rejects.toMatchObject({
      name: "ServerError",
      code: "unexpected_response",
    });
  });

  it("turns a refused connection into a ConnectionError that names the server", async () => {
    const client = new ShellsClient({ baseUrl: "http://127.0.0.1:1", token: "t" });
    const error = await client.whoami().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toMatchObject({ code: "connection_failed", status: 0, requestId: null });
    expect((error as Error).message).toContain("http://127.0.0.1:1");
  });

  it("gives up after timeoutMs with a ConnectionError coded timeout", async () => {
    const hang = serve(
      (request) =>
        new Promise<Response>((_, reject) => {
          request.signal.addEventListener("abort", () => reject(request.signal.reason as Error));
        }),
    );
    const client = new ShellsClient({ ...base, fetch: hang, timeoutMs: 20 });
    await expect(client.whoami()).rejects.toMatchObject({
      name: "ConnectionError",
      code: "timeout",
    });
  });

  it("reports a request the caller aborted as aborted", async () => {
    const hang = serve(
      (request) =>
        new Promise<Response>((_, reject) => {
          request.signal.addEventListener("abort", () => reject(request.signal.reason as Error));
        }),
    );
    const client = new ShellsClient({ ...base, fetch: hang });
    const controller = new AbortController();
    const pending = client.whoami({ signal: controller.signal });
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: "ConnectionError", code: "aborted" });
  });
});

describe("ShellsClient requests", () => {
  it("sends the body as JSON and the idempotency key as a header", async () => {
    let seen: { method: string; body: unknown; key: string | null } | undefined;
    const client = new ShellsClient({
      ...base,
      fetch: serve(async (request) => {
        seen = {
          method: request.method,
          body: await request.json(),
          key: request.headers.get("idempotency-key"),
        };
        return json(shell("s1"), 201);
      }),
    });
    const created = await client.create(
      { language: "rust", runtime: "microvm" },
      { idempotencyKey: "k1" },
    );
    expect(created.id).toBe("s1");
    expect(seen).toEqual({
      method: "POST",
      body: { language: "rust", runtime: "microvm" },
      key: "k1",
    });
  });

  it("sends action options as the body and per-call options as headers", async () => {
    let seen: { url: string; body: unknown; key: string | null } | undefined;
    const client = new ShellsClient({
      ...base,
      fetch: serve(async (request) => {
        seen = {
          url: request.url,
          body: await request.json(),
          key: request.headers.get("idempotency-key"),
        };
        return json({ capability: "snapshot", message: "ok", shell: shell("s1") });
      }),
    });
    await client.action("s1", "snapshot", { name: "before", idempotencyKey: "k2" });
    expect(seen).toEqual({
      url: "http://shells.test/api/v1/shells/s1/actions/snapshot",
      body: { name: "before" },
      key: "k2",
    });
  });

  it("changes a shell's egress with PATCH, the allowlist and confirmation as the body", async () => {
    let seen: { method: string; url: string; body: unknown; key: string | null } | undefined;
    const client = new ShellsClient({
      ...base,
      fetch: serve(async (request) => {
        seen = {
          method: request.method,
          url: request.url,
          body: await request.json(),
          key: request.headers.get("idempotency-key"),
        };
        return json(shell("s1"));
      }),
    });
    const egress = { mode: "allowlist" as const, allow: ["example.com", "10.0.0.0/8"] };
    const answer = await client.changeEgress("s1", { egress, confirm: "s1" });
    expect(answer).toMatchObject({ id: "s1" });
    expect(seen).toMatchObject({
      method: "PATCH",
      url: "http://shells.test/api/v1/shells/s1/egress",
      body: { egress, confirm: "s1" },
    });
    // A retry of the same change is safe: every call carries an idempotency key.
    expect(seen?.key).toBeTruthy();
  });

  it("escapes ids so they cannot reach another route", async () => {
    const urls: string[] = [];
    const client = new ShellsClient({
      ...base,
      fetch: serve((request) => {
        urls.push(request.url);
        return json(shell("x"));
      }),
    });
    await client.get("../me");
    expect(urls).toEqual(["http://shells.test/api/v1/shells/..%2Fme"]);
  });

  it("passes delete's confirmation in the query", async () => {
    const urls: string[] = [];
    const client = new ShellsClient({
      ...base,
      fetch: serve((request) => {
        urls.push(`${request.method} ${request.url}`);
        return json(shell("s1"));
      }),
    });
    await client.delete("s1", { confirm: "s1" });
    expect(urls).toEqual(["DELETE http://shells.test/api/v1/shells/s1?confirm=s1"]);
  });
});

describe("ShellsClient lists", () => {
  const ids = ["a", "b", "c", "d", "e"];
  const pagedServer = serve((request) => {
    const url = new URL(request.url);
    const limit = Number(url.searchParams.get("limit") ?? 50);
    const start = Number(url.searchParams.get("cursor") ?? 0);
    const end = start + limit;
    return json({
      items: ids.slice(start, end).map(shell),
      nextCursor: end < ids.length ? String(end) : null,
    });
  });

  it("iterates every shell across pages", async () => {
    const client = new ShellsClient({ ...base, fetch: pagedServer });
    const seen: string[] = [];
    for await (const s of client.list({ limit: 2 })) seen.push(s.id);
    expect(seen).toEqual(ids);
  });

  it("gives the first page alone with page()", async () => {
    const client = new ShellsClient({ ...base, fetch: pagedServer });
    const page = await client.list({ limit: 2 }).page();
    expect(page.items.map((s) => s.id)).toEqual(["a", "b"]);
    expect(page.nextCursor).toBe("2");
  });

  it("starts at the cursor the query names", async () => {
    const client = new ShellsClient({ ...base, fetch: pagedServer });
    const all = await client.list({ limit: 2, cursor: "3" }).toArray();
    expect(all.map((s) => s.id)).toEqual(["d", "e"]);
  });
});

describe("ShellsClient.verifyActivity", () => {
  async function chain(actions: string[]): Promise<ActivityEvent[]> {
    const events: ActivityEvent[] = [];
    let prevHash = GENESIS_HASH;
    for (const [index, action] of actions.entries()) {
      const fields = {
        seq: index + 1,
        orgId: "org",
        actor: { type: "user" as const, id: "u1" },
        action,
        target: null,
        outcome: "success" as const,
        details: {},
        time: "2025-01-01T00:00:00.000Z",
        prevHash,
      };
      const hash = await activityEventHash(fields);
      events.push({ ...fields, id: `evt-${index + 1}`, hash });
      prevHash = hash;
    }
    return events;
  }

  function activityServer(events: ActivityEvent[]): typeof fetch {
    return serve((request) => {
      const url = new URL(request.url);
      expect(url.searchParams.get("order")).toBe("asc");
      const start = Number(url.searchParams.get("cursor") ?? 0);
      const end = start + 2;
      return json({
        items: events.slice(start, end),
        nextCursor: end < events.length ? String(end) : null,
      });
    });
  }

  it("verifies a whole chain across pages", async () => {
    const events = await chain([
      "shell.create",
      "shell.exec",
      "shell.action.stop",
      "shell.delete",
      "auth.failed",
    ]);
    const client = new ShellsClient({ ...base, fetch: activityServer(events) });
    expect(await client.verifyActivity()).toMatchObject({
      ok: true,
      checked: 5,
      head: { eventId: "evt-5" },
    });
  });

  it("names the first event whose contents were changed", async () => {
    const events = await chain(["shell.create", "shell.exec", "shell.delete"]);
    events[1] = { ...events[1]!, action: "shell.get" };
    const client = new ShellsClient({ ...base, fetch: activityServer(events) });
    expect(await client.verifyActivity()).toMatchObject({ ok: false, eventId: "evt-2", seq: 2 });
  });
});

describe("ShellsClient.execStream", () => {
  function eventStream(text: string): Response {
    return new Response(text, { headers: { "content-type": "text/event-stream" } });
  }

  async function frames(client: ShellsClient) {
    const seen = [];
    for await (const frame of client.execStream("s1", { command: ["sh", "-c", "x"] })) {
      seen.push(frame);
    }
    return seen;
  }

  it("asks for an event stream and yields its frames until the exit frame", async () => {
    let accept: string | null = null;
    const client = new ShellsClient({
      ...base,
      fetch: serve((request) => {
        accept = request.headers.get("accept");
        return eventStream(
          [
            'event: stdout\ndata: {"type":"stdout","data":"a\\n","time":1}\n',
            'event: stderr\ndata: {"type":"stderr","data":"b\\n","time":2}\n',
            'event: exit\ndata: {"type":"exit","result":{"exitCode":3,"stdout":"","stderr":"","durationMs":5},"time":3}\n',
            "",
          ].join("\n"),
        );
      }),
    });
    expect(await frames(client)).toEqual([
      { type: "stdout", data: "a\n", time: 1 },
      { type: "stderr", data: "b\n", time: 2 },
      {
        type: "exit",
        result: { exitCode: 3, stdout: "", stderr: "", durationMs: 5 },
        time: 3,
      },
    ]);
    expect(accept).toBe("text/event-stream");
  });

  it("throws the typed error an error event carries", async () => {
    const client = new ShellsClient({
      ...base,
      fetch: serve(() =>
        eventStream(
          'event: error\ndata: {"error":{"code":"invalid_state","message":"stopped","requestId":"r"}}\n\n',
        ),
      ),
    });
    await expect(frames(client)).rejects.toMatchObject({
      name: "ConflictError",
      code: "invalid_state",
      status: 409,
    });
  });

  it("reports a stream that ends before the exit frame as a lost connection", async () => {
    const client = new ShellsClient({
      ...base,
      fetch: serve(() =>
        eventStream('event: stdout\ndata: {"type":"stdout","data":"a","time":1}\n\n'),
      ),
    });
    await expect(frames(client)).rejects.toMatchObject({
      name: "ConnectionError",
      code: "connection_failed",
    });
  });

  it("replays a server's buffered JSON answer as frames", async () => {
    const client = new ShellsClient({
      ...base,
      fetch: serve(() => json({ exitCode: 0, stdout: "out", stderr: "", durationMs: 1 })),
    });
    const seen = await frames(client);
    expect(seen.map((f) => f.type)).toEqual(["stdout", "exit"]);
    expect(seen[1]).toMatchObject({ result: { exitCode: 0, stdout: "" } });
  });
});

/** A fetch that answers each call with the next of `answers` and records what it was sent. */
function scripted(answers: (Response | Error)[]) {
  const seen: { method: string; key: string | null; at: number }[] = [];
  const fetch = serve((request) => {
    seen.push({
      method: request.method,
      key: request.headers.get("idempotency-key"),
      at: Date.now(),
    });
    const next = answers.shift();
    if (next === undefined) throw new Error("no more answers");
    if (next instanceof Error) throw next;
    return next;
  });
  return { fetch, seen };
}

/** What undici throws when the server drops the connection mid-request. */
function reset(): Error {
  return new TypeError("fetch failed", {
    cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
  });
}

function tooMany(retryAfter: string): Response {
  return new Response(
    JSON.stringify({ error: { code: "rate_limited", message: "slow down", requestId: "r" } }),
    { status: 429, headers: { "content-type": "application/json", "retry-after": retryAfter } },
  );
}

describe("ShellsClient retries", () => {
  it("retries a GET after a 429, waiting what Retry-After asks, then answers", async () => {
    const { fetch, seen } = scripted([tooMany("1"), json(shell("s1"))]);
    const client = new ShellsClient({ ...base, fetch });
    expect((await client.get("s1")).id).toBe("s1");
    expect(seen).toHaveLength(2);
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it("retries a GET after a 503 and a reset connection", async () => {
    const { fetch, seen } = scripted([errorResponse(503, "not_ready"), reset(), json(shell("s1"))]);
    const client = new ShellsClient({ ...base, fetch });
    expect((await client.get("s1")).id).toBe("s1");
    expect(seen.map((s) => s.method)).toEqual(["GET", "GET", "GET"]);
  });

  it("sends create again after a reset with the same idempotency key, so the server makes one shell", async () => {
    const { fetch, seen } = scripted([reset(), json(shell("s1"), 201)]);
    const client = new ShellsClient({ ...base, fetch });
    expect((await client.create({ language: "bash" })).id).toBe("s1");
    expect(seen).toHaveLength(2);
    expect(seen[0]!.key).toMatch(/^sdk-[0-9a-f-]{36}$/);
    expect(seen[1]!.key).toBe(seen[0]!.key);
  });

  it("waits out request_in_progress for a request with an idempotency key", async () => {
    const { fetch, seen } = scripted([
      new Response(
        JSON.stringify({ error: { code: "request_in_progress", message: "wait", requestId: "r" } }),
        { status: 409, headers: { "retry-after": "0" } },
      ),
      json(shell("s1"), 201),
    ]);
    const client = new ShellsClient({ ...base, fetch });
    await client.create({ language: "bash" }, { idempotencyKey: "k1" });
    expect(seen.map((s) => s.key)).toEqual(["k1", "k1"]);
  });

  it("never sends a POST without an idempotency key twice", async () => {
    const { fetch, seen } = scripted([errorResponse(503, "not_ready"), reset()]);
    const client = new ShellsClient({ ...base, fetch });
    await expect(
      client.members.create({ email: "a@example.com", role: "viewer" }),
    ).rejects.toBeInstanceOf(ServerError);
    expect(seen).toHaveLength(1);
    await expect(
      client.members.create({ email: "a@example.com", role: "viewer" }),
    ).rejects.toMatchObject({ code: "connection_failed" });
    expect(seen).toHaveLength(2);
  });

  it("gives up after maxRetries, on a refused connection at once, and past a minute's Retry-After", async () => {
    const unavailable = () => new Response("", { status: 503, headers: { "retry-after": "0" } });
    const always = scripted([unavailable(), unavailable(), unavailable(), unavailable()]);
    await expect(
      new ShellsClient({ ...base, fetch: always.fetch }).get("s1"),
    ).rejects.toBeInstanceOf(ServerError);
    expect(always.seen).toHaveLength(3);

    const refused = scripted([
      new TypeError("fetch failed", {
        cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }),
      }),
    ]);
    await expect(
      new ShellsClient({ ...base, fetch: refused.fetch }).get("s1"),
    ).rejects.toMatchObject({ code: "connection_failed" });
    expect(refused.seen).toHaveLength(1);

    const later = scripted([tooMany("120")]);
    await expect(
      new ShellsClient({ ...base, fetch: later.fetch }).get("s1"),
    ).rejects.toBeInstanceOf(RateLimitError);
    expect(later.seen).toHaveLength(1);

    const off = scripted([unavailable()]);
    await expect(
      new ShellsClient({ ...base, fetch: off.fetch, maxRetries: 0 }).get("s1"),
    ).rejects.toBeInstanceOf(ServerError);
    expect(off.seen).toHaveLength(1);
  });

  it("stops waiting to retry when the caller aborts", async () => {
    const { fetch, seen } = scripted([tooMany("30"), json(shell("s1"))]);
    const client = new ShellsClient({ ...base, fetch });
    const controller = new AbortController();
    const pending = client.get("s1", { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: "ConnectionError", code: "aborted" });
    expect(seen).toHaveLength(1);
  });
});
