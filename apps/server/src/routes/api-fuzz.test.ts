import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

interface Operation {
  method: string;
  path: string;
  parameters: { name: string; in: string; schema: { enum?: string[] } }[];
  hasBody: boolean;
}

let t: TestApp;
let shellId = "";
let operations: Operation[] = [];

beforeAll(async () => {
  t = await createTestApp();
  shellId = (
    await t.call("POST", "/api/v1/shells", { language: "bash", name: "fuzz-target" })
  ).json().id;
  const doc = (await t.app.inject("/openapi.json")).json();
  operations = Object.entries(
    doc.paths as Record<
      string,
      Record<string, { parameters?: Operation["parameters"]; requestBody?: unknown }>
    >,
  ).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => ({
      method: method.toUpperCase(),
      path,
      parameters: op.parameters ?? [],
      hasBody: op.requestBody !== undefined,
    })),
  );
});
afterAll(async () => {
  await t.close();
});

const nasty = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.constantFrom(
    "..",
    "../..",
    "%2e%2e",
    "%00",
    "'; drop table shells;--",
    "\u202e",
    "a".repeat(300),
    "-1",
    "1e309",
    "[]",
    "{}",
    "null",
  ),
);
const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        language: fc.oneof(fc.constantFrom("bash", "python", "node", "rust", "go"), nasty),
        runtime: fc.oneof(fc.constantFrom("wasm", "container", "microvm"), nasty),
        network: fc.oneof(fc.constantFrom("sealed", "localhost", "internet"), nasty),
        command: fc.oneof(fc.array(fc.string({ maxLength: 20 }), { maxLength: 4 }), nasty),
        timeoutMs: fc.oneof(fc.integer(), fc.double()),
        resources: fc.dictionary(
          fc.constantFrom("cpu", "memoryMb", "pids", "diskMb", "x"),
          fc.oneof(fc.integer(), fc.double(), nasty),
        ),
        env: fc.dictionary(nasty, fc.oneof(nasty, fc.integer())),
        name: nasty,
        tail: fc.integer(),
        confirm: nasty,
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
  nasty,
);

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`hang: ${what}`)), ms)),
  ]);
}

describe("every route in /openapi.json under generated input", () => {
  it("never answers 5xx and never hangs", async () => {
    expect(operations.length).toBeGreaterThan(8);
    const request = fc.record({
      opIndex: fc.nat(),
      pathValues: fc.array(fc.oneof(fc.constant("__shell__"), fc.constant("fuzz-target"), nasty), {
        minLength: 2,
        maxLength: 2,
      }),
      encode: fc.boolean(),
      query: fc.dictionary(
        fc.oneof(
          fc.constantFrom(
            "limit",
            "cursor",
            "status",
            "language",
            "runtime",
            "shell",
            "actor",
            "action",
            "order",
            "confirm",
          ),
          nasty,
        ),
        nasty,
        { maxKeys: 3 },
      ),
      body: fc.option(jsonish),
      contentType: fc.constantFrom(
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "garbage/type",
      ),
      auth: fc.oneof(fc.constant("valid"), fc.constant("none"), nasty),
      idempotencyKey: fc.option(nasty),
    });
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const op = operations[r.opIndex % operations.length]!;
        let i = 0;
        const url = op.path.replace(/\{[^}]+\}/g, () => {
          const v = r.pathValues[i++] ?? "";
          const value = v === "__shell__" ? shellId : v;
          return r.encode ? encodeURIComponent(value) : value.replace(/[?#]/g, "");
        });
        const qs = new URLSearchParams(Object.entries(r.query)).toString();
        const headers: Record<string, string> = {};
        if (r.auth === "valid") headers.authorization = `Bearer ${t.token}`;
        else if (r.auth !== "none") headers.authorization = r.auth.replace(/[^\x20-\x7e]/g, "");
        if (r.contentType && r.body !== null) headers["content-type"] = r.contentType;
        if (r.idempotencyKey !== null)
          headers["idempotency-key"] = r.idempotencyKey.replace(/[^\x20-\x7e]/g, "");
        const res = await withTimeout(
          t.app.inject({
            method: op.method as "GET",
            url: `${url}${qs ? `?${qs}` : ""}`,
            headers,
            ...(r.body !== null ? { payload: r.body } : {}),
          }),
          5000,
          `${op.method} ${url}`,
        );
        expect(res.statusCode, `${op.method} ${url} → ${res.body.slice(0, 300)}`).toBeLessThan(500);
        if (res.statusCode >= 400) expect(typeof res.json().error.code).toBe("string");
      }),
      { numRuns: 1500 },
    );
  }, 120_000);
});
