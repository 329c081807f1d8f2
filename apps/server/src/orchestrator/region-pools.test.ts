import type { Shell } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";
import { parseRegionPools, resolveRegionPools } from "./region-pools.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const create = (app: TestApp, body: Record<string, unknown>) =>
  app.call("POST", "/api/v1/shells", { language: "bash", ...body });

describeEachStore((store) => {
  describe("backend pools by region", () => {
    it("places a shell in its region's pool, spills a create naming no region into the next allowed region, and refuses when every one is full", async () => {
      t = await createTestApp({
        openStore: store.open,
        env: {
          SHELLS_REGION: "eu-west",
          SHELLS_REGIONS: "us-east:container=1;eu-west:container=1;lab",
        },
      });
      // Readiness lists every pool, the default first, and each limited class's use per region.
      const before = (await t.app.inject("/readyz")).json();
      expect(before).toMatchObject({ region: "eu-west", regions: ["eu-west", "us-east", "lab"] });
      expect(before.capacity).toEqual([
        { region: "eu-west", runtime: "container", slots: 1, reserved: 0, inUse: 0 },
        { region: "us-east", runtime: "container", slots: 1, reserved: 0, inUse: 0 },
      ]);

      const named = await create(t, { region: "us-east" });
      expect(named.statusCode, named.body).toBe(201);
      expect(named.json<Shell>().region).toBe("us-east");
      // us-east's one slot is taken; eu-west's is not (each pool counts its own region's shells).
      const full = await create(t, { region: "us-east" });
      expect(full.statusCode).toBe(409);
      expect(full.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: { region: "us-east", runtime: "container", slots: 1, sharedInUse: 1 },
      });
      const byDefault = await create(t, {});
      expect(byDefault.json<Shell>().region).toBe("eu-west");
      // The default region is full now: a create naming none goes to the next region with room.
      const spilled = await create(t, {});
      expect(spilled.statusCode, spilled.body).toBe(201);
      expect(spilled.json<Shell>().region).toBe("lab");

      // An org allowed only the full regions is refused, naming the regions tried.
      const policy = await t.call("PATCH", "/api/v1/org/policy", {
        allowedRegions: ["us-east", "eu-west"],
      });
      expect(policy.statusCode, policy.body).toBe(200);
      const exhausted = await create(t, {});
      expect(exhausted.statusCode).toBe(409);
      expect(exhausted.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: { region: "eu-west", regionsTried: ["eu-west", "us-east"] },
      });
      const notAllowed = await create(t, { region: "lab" });
      expect(notAllowed.statusCode).toBe(422);
      expect(notAllowed.json().error).toMatchObject({
        code: "region_not_allowed",
        details: { region: "lab", allowedRegions: ["us-east", "eu-west"] },
      });
      const elsewhere = await t.call("PATCH", "/api/v1/org/policy", {
        allowedRegions: ["ap-south", "us-east"],
      });
      expect(elsewhere.statusCode).toBe(200);
      const unavailable = await create(t, { region: "ap-south" });
      expect(unavailable.statusCode).toBe(422);
      expect(unavailable.json().error).toMatchObject({
        code: "region_unavailable",
        details: { offered: ["eu-west", "us-east", "lab"] },
      });

      // A stopped shell frees its region's slot; starting it again needs one in that same region.
      const shell = named.json<Shell>();
      const stop = await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, {});
      expect(stop.statusCode, stop.body).toBe(200);
      const refill = await create(t, {});
      expect(refill.json<Shell>().region).toBe("us-east");
      const start = await t.call("POST", `/api/v1/shells/${shell.id}/actions/start`, {});
      expect(start.statusCode).toBe(409);
      expect(start.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: { region: "us-east" },
      });

      const after = (await t.app.inject("/readyz")).json();
      expect(after.capacity).toEqual([
        { region: "eu-west", runtime: "container", slots: 1, reserved: 0, inUse: 1 },
        { region: "us-east", runtime: "container", slots: 1, reserved: 0, inUse: 1 },
      ]);
    });

    it("holds a reservation in the region it names: another org's reserved slots there are not taken, its other regions' are", async () => {
      t = await createTestApp({
        openStore: store.open,
        env: {
          SHELLS_REGIONS: "eu-west:container=2;us-east:container=2",
          SHELLS_RESERVATIONS: "org_elsewhere@us-east:container=2,org_elsewhere:container=1",
        },
      });
      const ready = (await t.app.inject("/readyz")).json();
      expect(ready.capacity).toEqual([
        { region: "eu-west", runtime: "container", slots: 2, reserved: 1, inUse: 0 },
        { region: "us-east", runtime: "container", slots: 2, reserved: 2, inUse: 0 },
      ]);
      const reserved = await create(t, { region: "us-east" });
      expect(reserved.statusCode).toBe(409);
      expect(reserved.json().error).toMatchObject({
        code: "capacity_exhausted",
        details: { region: "us-east", runtime: "container" },
      });
      // The default region holds one slot for that org and shares the other.
      expect((await create(t, {})).json<Shell>().region).toBe("eu-west");
      expect((await create(t, {})).statusCode).toBe(409);
    });

    it("refuses an org none of whose allowed regions this server offers, and reports every region's gauges", async () => {
      t = await createTestApp({
        openStore: store.open,
        env: {
          SHELLS_REGIONS: "eu-west;us-east",
          SHELLS_METRICS_TOKEN: "region-metrics-token-0123456789",
        },
      });
      // Every region's shell gauges exist before it holds a shell.
      const metrics = await t.app.inject({
        url: "/metrics",
        headers: { authorization: "Bearer region-metrics-token-0123456789" },
      });
      expect(metrics.body).toMatch(/shells_shells\{[^}]*region="us-east"[^}]*\} 0/);
      await t.call("PATCH", "/api/v1/org/policy", { allowedRegions: ["ap-south"] });
      const refused = await create(t, {});
      expect(refused.statusCode).toBe(422);
      expect(refused.json().error).toMatchObject({
        code: "region_not_allowed",
        details: { allowedRegions: ["ap-south"], offered: ["eu-west", "us-east"] },
      });
      await t.call("PATCH", "/api/v1/org/policy", { allowedRegions: ["us-east"] });
      expect((await create(t, {})).json<Shell>().region).toBe("us-east");
    });
  });
});

describe("region pool settings", () => {
  it("refuses a reservation naming a region without a pool", async () => {
    await expect(
      createTestApp({
        env: {
          SHELLS_REGIONS: "eu-west:container=2",
          SHELLS_RESERVATIONS: "org_a@mars:container=1",
        },
      }),
    ).rejects.toThrow(/region mars, which has no pool/);
  });

  it("parses pools, takes SHELLS_CLASS_SLOTS for a region without slots, and keeps the single-region settings", () => {
    expect(parseRegionPools("eu-west:container=8,microvm=2; us-east")).toEqual([
      { region: "eu-west", slots: { container: 8, microvm: 2 } },
      { region: "us-east" },
    ]);
    expect(parseRegionPools("eu-west;eu-west")).toMatch(/twice/);
    expect(parseRegionPools("EU West:container=1")).toMatch(/not a region label/);
    expect(parseRegionPools("eu-west:gpu=1")).toMatch(/region eu-west: "gpu=1" is not/);
    expect(() => loadConfig([], { SHELLS_REGIONS: "a;a" })).toThrow(/SHELLS_REGIONS/);

    const listed = loadConfig([], {
      SHELLS_REGIONS: "eu-west;us-east:microvm=1",
      SHELLS_CLASS_SLOTS: "container=3",
    });
    expect(resolveRegionPools(listed)).toEqual({
      defaultRegion: "eu-west",
      pools: [
        { region: "eu-west", slots: { container: 3 } },
        { region: "us-east", slots: { microvm: 1 } },
      ],
    });
    const single = loadConfig([], { SHELLS_REGION: "eu-west", SHELLS_CLASS_SLOTS: "container=2" });
    expect(resolveRegionPools(single)).toEqual({
      defaultRegion: "eu-west",
      pools: [{ region: "eu-west", slots: { container: 2 } }],
    });
  });
});
