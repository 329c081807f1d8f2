import { describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { CapacityGate } from "./capacity.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function gate(options: Partial<ConstructorParameters<typeof CapacityGate>[0]> = {}) {
  return new CapacityGate({
    maxProvisioning: 2,
    queueTimeoutMs: 1000,
    memoryBudgetMb: 0,
    committedMb: async () => 0,
    ...options,
  });
}

async function refusalOf(promise: Promise<unknown>): Promise<AppError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  if (!(error instanceof AppError)) throw new Error(`expected a refusal, got ${String(error)}`);
  return error;
}

describe("CapacityGate", () => {
  it("lets a burst through at most maxProvisioning at a time, in arrival order, with no refusal", async () => {
    const g = gate({ maxProvisioning: 3 });
    let running = 0;
    let most = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, index) => {
        const ticket = await g.admit(512);
        order.push(index);
        running += 1;
        most = Math.max(most, running);
        await sleep(5);
        running -= 1;
        ticket.release();
      }),
    );
    expect(most).toBe(3);
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(g.load).toEqual({ provisioning: 0, queued: 0, reservedMb: 0 });
  });

  it("refuses a create that waits past the queue timeout with capacity_unavailable and a Retry-After, and serves the next once a slot frees", async () => {
    const g = gate({ maxProvisioning: 1, queueTimeoutMs: 50 });
    const first = await g.admit(256);
    const refused = await refusalOf(g.admit(256));
    expect(refused.code).toBe("capacity_unavailable");
    expect(refused.status).toBe(503);
    expect(refused.details).toMatchObject({ reason: "provisioning", provisioning: 1 });
    expect(refused.details?.["retryAfterMs"]).toBeGreaterThanOrEqual(1000);
    expect(g.load.queued).toBe(0);
    const waiting = g.admit(256);
    first.release();
    (await waiting).release();
    expect(g.load).toEqual({ provisioning: 0, queued: 0, reservedMb: 0 });
  });

  it("refuses at once a shell whose memory would take the host past its budget, counting creates admitted but not yet recorded", async () => {
    let stored = 1024;
    const g = gate({ maxProvisioning: 0, memoryBudgetMb: 2048, committedMb: async () => stored });
    const admitted = await g.admit(512);
    // 1024 stored + 512 reserved: another 1024 does not fit, 512 does.
    const refused = await refusalOf(g.admit(1024));
    expect(refused.details).toMatchObject({
      reason: "memory",
      askedMb: 1024,
      committedMb: 1536,
      budgetMb: 2048,
    });
    expect(refused.details?.["retryAfterMs"]).toBe(30_000);
    // The row is written and counted by the store: the reservation ends, the total stays.
    stored += 512;
    admitted.recorded();
    expect(g.load.reservedMb).toBe(0);
    await refusalOf(g.admit(1024));
    (await g.admit(512)).release();
  });

  it("never lets concurrent creates pass on the same reading of the memory in use", async () => {
    const g = gate({
      maxProvisioning: 0,
      memoryBudgetMb: 2048,
      committedMb: async () => {
        await sleep(2);
        return 0;
      },
    });
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => g.admit(512)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(4);
    expect(g.load.reservedMb).toBe(2048);
  });

  it("frees a refused create's memory reservation, and a ticket's slot only once", async () => {
    const g = gate({ maxProvisioning: 1, queueTimeoutMs: 20, memoryBudgetMb: 1024 });
    const first = await g.admit(512);
    await refusalOf(g.admit(512));
    expect(g.load.reservedMb).toBe(512);
    first.release();
    first.release();
    expect(g.load).toEqual({ provisioning: 0, queued: 0, reservedMb: 0 });
  });
});
