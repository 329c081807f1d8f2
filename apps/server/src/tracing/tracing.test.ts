import type { Shell } from "@shells/contract";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { startTracing, type Tracing } from "./tracing.js";

/** One span as an OTLP/JSON export carries it (the fields this test reads). */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: number | string } }[];
}

/** A collector on loopback: it accepts OTLP/HTTP JSON exports and keeps their bodies. */
async function startCollector(): Promise<{ server: Server; url: string; bodies: string[] }> {
  const bodies: string[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      if (request.url === "/v1/traces" && request.headers["content-type"] === "application/json")
        bodies.push(Buffer.concat(chunks).toString("utf8"));
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/v1/traces`, bodies };
}

function spansOf(bodies: string[]): ExportedSpan[] {
  return bodies.flatMap((body) => {
    const parsed = JSON.parse(body) as {
      resourceSpans: { scopeSpans: { spans: ExportedSpan[] }[] }[];
    };
    return parsed.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
  });
}

const attribute = (span: ExportedSpan, key: string) => {
  const value = span.attributes.find((a) => a.key === key)?.value;
  return value?.stringValue ?? (value?.intValue === undefined ? undefined : Number(value.intValue));
};

let t: TestApp | undefined;
let tracing: Tracing | null = null;
let collector: Server | undefined;
afterEach(async () => {
  await t?.close();
  await tracing?.shutdown();
  collector?.close();
  t = undefined;
  tracing = null;
});

describe("OpenTelemetry tracing", () => {
  it("exports a span per request with admission, store and backend children, joined to the caller's trace, with no secrets", async () => {
    const received = await startCollector();
    collector = received.server;
    tracing = startTracing({
      otlpEndpoint: received.url,
      otlpServiceName: "shells-test",
      traceSampleRatio: 1,
    });
    t = await createTestApp({ env: { SHELLS_OTLP_ENDPOINT: received.url } });
    const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpan = "00f067aa0ba902b7";
    const secret = "s3cret-value-that-must-not-leak";
    // Over a real socket: request bodies arrive in the socket's own async context.
    const base = await t.app.listen({ port: 0, host: "127.0.0.1" });
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${base}${path}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${t!.token}`,
          "content-type": "application/json",
          ...headers,
        },
        body: JSON.stringify(body),
      });
    const created = await post(
      "/api/v1/shells",
      { language: "bash", env: { GREETING: "hello" } },
      { traceparent: `00-${callerTrace}-${callerSpan}-01` },
    );
    expect(created.status).toBe(201);
    const shell = (await created.json()) as Shell;
    const exec = await post(`/api/v1/shells/${shell.id}/exec`, {
      command: ["echo", "hi"],
      secretEnv: { TOKEN: secret },
    });
    expect(exec.status).toBe(200);
    const apiKey = t.token;
    await t.close();
    t = undefined;
    await tracing?.shutdown();
    tracing = null;

    const payload = received.bodies.join("\n");
    expect(payload).toContain('"shells-test"');
    const spans = spansOf(received.bodies);
    const byName = (name: string) => spans.filter((s) => s.name === name);

    const [createRequest] = byName("POST /api/v1/shells");
    expect(createRequest).toBeDefined();
    expect(createRequest!.traceId).toBe(callerTrace);
    expect(createRequest!.parentSpanId).toBe(callerSpan);
    expect(attribute(createRequest!, "http.route")).toBe("/api/v1/shells");
    expect(attribute(createRequest!, "http.response.status_code")).toBe(201);
    expect(attribute(createRequest!, "shells.org_id")).toMatch(/^org/);
    for (const child of ["shells.admission", "store.insert_shell", "backend.create"]) {
      const [span] = byName(child);
      expect(span, child).toBeDefined();
      expect(span!.traceId, child).toBe(callerTrace);
      expect(span!.parentSpanId, child).toBe(createRequest!.spanId);
    }
    expect(attribute(byName("backend.create")[0]!, "shells.shell_id")).toBe(shell.id);

    const [execRequest] = byName("POST /api/v1/shells/:id/exec");
    expect(execRequest).toBeDefined();
    expect(execRequest!.traceId).not.toBe(callerTrace);
    expect(execRequest!.parentSpanId ?? "").toBe("");
    const [backendExec] = byName("backend.exec");
    expect(backendExec!.parentSpanId).toBe(execRequest!.spanId);
    expect(backendExec!.traceId).toBe(execRequest!.traceId);

    // Nothing the caller keeps secret reaches the collector: not the API key, not a secret env value.
    expect(payload).not.toContain(secret);
    expect(payload).not.toContain(apiKey);
  });

  it("registers nothing and exports nothing when no endpoint is set", async () => {
    expect(
      startTracing({ otlpEndpoint: undefined, otlpServiceName: "shells", traceSampleRatio: 1 }),
    ).toBeNull();
  });
});
