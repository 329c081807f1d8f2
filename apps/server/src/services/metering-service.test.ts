import { SimulatorBackend, type SandboxUsage } from "@shells/sandbox";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Caller } from "../iam/principal.js";
import { RuntimeRegistry } from "../orchestrator/runtimes.js";
import { openSqliteStore, type Store } from "../store/database.js";
import {
  addMeteredShell,
  moveMeteredShell,
  seedMeteredOrg,
} from "../test-support/metered-shells.js";
import { ActivityService } from "./activity-service.js";
import { MeteringService } from "./metering-service.js";

const T0 = Date.UTC(2026, 2, 1, 10);

/** A backend whose counters the test sets: what a cgroup would report. */
class CountingBackend extends SimulatorBackend {
  readonly counters = new Map<string, SandboxUsage>();
  override async usage(shellId: string): Promise<SandboxUsage | null> {
    return this.counters.get(shellId) ?? null;
  }
}

const caller: Caller = {
  orgId: "org1",
  actor: { type: "user", id: "usr-1" },
  role: "owner",
  keyId: null,
  scopes: ["shells:instances:read"],
  entitlements: [],
};

let dir: string;
let store: Store;
let backend: CountingBackend;
let clock: number;

function meter(): MeteringService {
  const db = store.db;
  return new MeteringService({
    db,
    runtimes: new RuntimeRegistry([backend]),
    activity: new ActivityService(db),
    logger: pino({ level: "silent" }),
    now: () => clock,
  });
}

async function usageOf(metering: MeteringService, shell: string) {
  return (
    await metering.report(caller, {
      shell,
      from: new Date(T0).toISOString(),
      to: new Date(T0 + 3_600_000).toISOString(),
      limit: 10,
    })
  ).total;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "shells-metering-"));
  store = await openSqliteStore(join(dir, "shells.db"));
  await seedMeteredOrg(store, T0);
  backend = new CountingBackend();
  clock = T0;
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the metering service", () => {
  it("adds what each counter grew by; a new epoch counts from zero; memory is integrated over time", async () => {
    const metering = meter();
    await addMeteredShell(store, "sh-a", T0);
    await moveMeteredShell(store, "sh-a", "running", T0);
    backend.counters.set("sh-a", { cpuUsec: 300_000, memoryBytes: 64 * 1024 * 1024, epoch: "1" });
    clock = T0 + 2_000;
    await metering.checkpoint();
    backend.counters.set("sh-a", { cpuUsec: 500_000, memoryBytes: 128 * 1024 * 1024, epoch: "1" });
    clock = T0 + 4_000;
    await metering.checkpoint();
    // The cgroup was made again (a restart): its counter starts at zero.
    backend.counters.set("sh-a", { cpuUsec: 50_000, memoryBytes: 0, epoch: "2" });
    clock = T0 + 6_000;
    await metering.checkpoint();
    const total = await usageOf(metering, "sh-a");
    expect(total.cpuSeconds).toBe(0.55);
    expect(total.memoryMbSeconds).toBe(64 * 2 + 128 * 2);
    expect(total.seconds.running).toBe(6);
  });

  it("settles a shell's counters before its processes end, and never counts one reading twice", async () => {
    const metering = meter();
    await addMeteredShell(store, "sh-a", T0);
    await moveMeteredShell(store, "sh-a", "running", T0);
    backend.counters.set("sh-a", { cpuUsec: 700_000, memoryBytes: 0, epoch: "1" });
    clock = T0 + 1_000;
    await Promise.all([metering.settle("sh-a"), metering.checkpoint(), metering.settle("sh-a")]);
    backend.counters.delete("sh-a");
    await moveMeteredShell(store, "sh-a", "stopped", T0 + 1_000);
    clock = T0 + 3_000;
    await metering.checkpoint();
    const total = await usageOf(metering, "sh-a");
    expect(total.cpuSeconds).toBe(0.7);
    expect(total.seconds).toMatchObject({ running: 1, stopped: 2 });
  });

  it("survives a crash: the next process continues a still-running shell and its CPU counter, counting the downtime once", async () => {
    let metering = meter();
    await addMeteredShell(store, "sh-a", T0);
    await moveMeteredShell(store, "sh-a", "running", T0 + 1_000);
    backend.counters.set("sh-a", { cpuUsec: 1_000_000, memoryBytes: 0, epoch: "9" });
    clock = T0 + 10_000;
    await metering.checkpoint();
    // The process dies at T0 + 11 s without a last checkpoint; the cgroup runs on, and has used
    // another 2 s of CPU by the time the next process reads it at T0 + 20 s.
    await store.close();
    store = await openSqliteStore(join(dir, "shells.db"));
    clock = T0 + 20_000;
    metering = meter();
    await metering.recover();
    await metering.resume();
    backend.counters.set("sh-a", { cpuUsec: 3_000_000, memoryBytes: 0, epoch: "9" });
    clock = T0 + 21_000;
    await metering.checkpoint();
    const total = await usageOf(metering, "sh-a");
    expect(total.seconds).toMatchObject({ provisioning: 1, running: 20 });
    expect(total.cpuSeconds).toBe(3);
  });

  it("applies a rate change from its moment on: earlier time keeps its rates", async () => {
    const metering = meter();
    await addMeteredShell(store, "sh-a", T0);
    await moveMeteredShell(store, "sh-a", "running", T0);
    clock = T0 + 1_800_000;
    await metering.updateRates(caller, { classes: { container: { runningPerHour: "1" } } });
    clock = T0 + 3_600_000;
    const total = await usageOf(metering, "sh-a");
    // Half an hour at the default 0.04, half an hour at 1.
    expect(total.cost).toBe("0.52");
    expect((await metering.rates("org1")).classes.container.runningPerHour).toBe("1.00");
  });
});
