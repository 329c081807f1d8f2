import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

/**
 * `/readyz` is what a Kubernetes readiness probe (deploy/kubernetes) asks: it must fail while the
 * store cannot answer, so no traffic reaches a replica that cannot serve it; `/healthz` (liveness)
 * stays up, so the probe does not restart a process that is only waiting.
 */
let t: TestApp | undefined;
afterEach(async () => t?.close({ remove: true }).catch(() => undefined));

describe("readiness", () => {
  it("answers 503 not_ready once the store is closed, while liveness still answers", async () => {
    t = await createTestApp();
    expect((await t.app.inject("/readyz")).statusCode).toBe(200);
    await t.store.close();
    const ready = await t.app.inject("/readyz");
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toMatchObject({ error: { code: "not_ready" } });
    expect((await t.app.inject("/healthz")).statusCode).toBe(200);
  });
});
