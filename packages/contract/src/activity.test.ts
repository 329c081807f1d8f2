import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  activityEventHash,
  activityHashInput,
  GENESIS_HASH,
  type HashedFields,
} from "./activity.js";

const event: HashedFields = {
  seq: 7,
  orgId: "org_1",
  actor: { type: "user", id: "ada" },
  action: "shell.exec",
  target: { type: "shell", id: "sh_1" },
  outcome: "success",
  details: { command: ["echo", "é ✓"], nested: { b: 1, a: [null, true] } },
  time: "2026-11-28T04:00:00.000Z",
  prevHash: GENESIS_HASH,
};

describe("activity event hashes", () => {
  it("are the same from WebCrypto and from a synchronous SHA-256 over the hash input", async () => {
    const sync = createHash("sha256").update(activityHashInput(event)).digest("hex");
    expect(sync).toMatch(/^[0-9a-f]{64}$/);
    expect(await activityEventHash(event)).toBe(sync);
  });

  it("cover every hashed field, in any key order, and nothing else", async () => {
    const reordered = Object.fromEntries(Object.entries(event).reverse()) as HashedFields;
    expect(activityHashInput(reordered)).toBe(activityHashInput(event));
    const withExtra = { ...event, id: "ev_x", hash: "f".repeat(64) } as HashedFields;
    expect(activityHashInput(withExtra)).toBe(activityHashInput(event));
    expect(
      await activityEventHash({ ...event, details: { ...event.details, command: ["rm"] } }),
    ).not.toBe(await activityEventHash(event));
  });
});
