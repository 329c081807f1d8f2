import { Scope, type Shell } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";
import { parseClassSlots, parseReservations, reservationProblem } from "./reservations.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** A second org's admin, calling with its own key. */
async function otherOrg(app: TestApp, orgId: string) {
  const { token } = await addPrincipal(app.store, {
    orgId,
    role: "admin",
    scopes: Scope.options,
  });
  return (method: string, url: string, body?: unknown) =>
    app.call(method, url, body, { authorization: `Bearer ${token}` });
}

describeEachStore((store) => {
  describe("reserved capacity", () => {
    it("keeps reserved slots for their org: others get capacity_exhausted, the holder always finds room", async () => {
      t = await createTestApp({
        openStore: store.open,
        env: { SHELLS_CLASS_SLOTS: "container=3", SHELLS_RESERVATIONS: "org_b:container=2" },
      });
      const b = await otherOrg(t, "org_b");
      // The owner's org has only the one shared slot.
      const first = await t.call("POST", "/api/v1/shells", { language: "bash" });
      expect(first.statusCode, first.body).toBe(201);
      const refused = await t.call("POST", "/api/v1/shells", { language: "bash" });
      expect(refused.statusCode).toBe(409);
      expect(refused.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: {
          runtime: "container",
          slots: 3,
          reservedForOthers: 2,
          reserved: 0,
          sharedInUse: 1,
          sharedSlots: 1,
        },
      });
      // Other classes are not limited.
      const wasm = await t.call("POST", "/api/v1/shells", { language: "python", runtime: "wasm" });
      expect(wasm.statusCode, wasm.body).toBe(201);

      // org_b's two reserved slots are free although the shared one is taken.
      for (let i = 0; i < 2; i++)
        expect((await b("POST", "/api/v1/shells", { language: "bash" })).statusCode).toBe(201);
      const overflow = await b("POST", "/api/v1/shells", { language: "bash" });
      expect(overflow.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: { reserved: 2, reservedInUse: 2, sharedInUse: 1, reservedForOthers: 0 },
      });

      // The shared slot freed, org_b overflows into it, and the owner's org cannot start again.
      const shell = first.json<Shell>();
      const stop = await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, {});
      expect(stop.statusCode, stop.body).toBe(200);
      expect((await b("POST", "/api/v1/shells", { language: "bash" })).statusCode).toBe(201);
      const start = await t.call("POST", `/api/v1/shells/${shell.id}/actions/start`, {});
      expect(start.statusCode).toBe(409);
      expect(start.json().error.code).toBe("capacity_exhausted");
      const history = await t.call("GET", "/api/v1/activity?action=shell.create");
      expect(history.json().items).toContainEqual(
        expect.objectContaining({
          outcome: "denied",
          details: expect.objectContaining({ reservedForOthers: 2, sharedInUse: 1 }),
        }),
      );
    });

    it("holds a project's reservation for that project only", async () => {
      t = await createTestApp({
        openStore: store.open,
        env: { SHELLS_CLASS_SLOTS: "container=1", SHELLS_RESERVATIONS: "org_b/ci:container=1" },
      });
      const b = await otherOrg(t, "org_b");
      expect((await b("POST", "/api/v1/projects", { name: "ci" })).statusCode).toBe(201);
      const outside = await b("POST", "/api/v1/shells", { language: "bash" });
      expect(outside.json().error.code).toBe("capacity_exhausted");
      const inside = await b("POST", "/api/v1/shells", { language: "bash", project: "ci" });
      expect(inside.statusCode, inside.body).toBe(201);
      // Readiness shows the pool, not who holds it.
      const ready = await t.app.inject("/readyz");
      expect(ready.json()).toMatchObject({
        region: "local",
        capacity: [{ runtime: "container", slots: 1, reserved: 1, inUse: 1 }],
      });
      expect(ready.body).not.toContain("org_b");
    });
  });
});

describe("reservation settings", () => {
  it("refuses reservations that do not fit the slots, and malformed settings", () => {
    expect(parseClassSlots("container=4, microvm=1")).toEqual({ container: 4, microvm: 1 });
    expect(parseClassSlots("gpu=1")).toMatch(/is not/);
    expect(parseReservations("org_a:container=2,org_b/ci:microvm=1")).toEqual([
      { orgId: "org_a", runtime: "container", slots: 2 },
      { orgId: "org_b", project: "ci", runtime: "microvm", slots: 1 },
    ]);
    expect(parseReservations("org_a@eu-west:container=2,org_a:container=1")).toEqual([
      { orgId: "org_a", region: "eu-west", runtime: "container", slots: 2 },
      { orgId: "org_a", runtime: "container", slots: 1 },
    ]);
    expect(parseReservations("org_a@EU:container=2")).toMatch(/is not/);
    expect(parseReservations("org_a:container=0")).toMatch(/at least 1/);
    expect(parseReservations("org_a:container=1,org_a:container=2")).toMatch(/twice/);
    const reservations = parseReservations("org_a:container=3") as [];
    expect(reservationProblem(reservations, { container: 2 })).toMatch(
      /3 container slots are reserved but the server has 2/,
    );
    expect(reservationProblem(reservations, {})).toMatch(/not limited/);
    expect(() => loadConfig([], { SHELLS_RESERVATIONS: "org_a" })).toThrow(/SHELLS_RESERVATIONS/);
  });

  it("fails to build an app whose reservations exceed its slots", async () => {
    await expect(
      createTestApp({
        env: { SHELLS_CLASS_SLOTS: "container=1", SHELLS_RESERVATIONS: "org_b:container=2" },
      }),
    ).rejects.toThrow(/SHELLS_RESERVATIONS: 2 container slots are reserved but the server has 1/);
  });
});

describe("regions", () => {
  it("refuses a region this server does not run shells in, naming the one it offers", async () => {
    t = await createTestApp({ env: { SHELLS_REGION: "eu-west" } });
    const elsewhere = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      region: "us-east",
    });
    expect(elsewhere.statusCode).toBe(422);
    expect(elsewhere.json().error).toMatchObject({
      code: "region_unavailable",
      details: { region: "us-east", offered: ["eu-west"] },
    });
    const here = await t.call("POST", "/api/v1/shells", { language: "bash", region: "eu-west" });
    expect(here.json()).toMatchObject({ region: "eu-west" });
    const byDefault = await t.call("POST", "/api/v1/shells", { language: "bash" });
    expect(byDefault.json()).toMatchObject({ region: "eu-west" });
  });
});
