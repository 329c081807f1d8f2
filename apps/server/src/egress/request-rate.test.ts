import { describe, expect, it } from "vitest";
import { RequestRate } from "./request-rate.js";

describe("a shell's egress request rate", () => {
  it("allows a burst, then refuses until time refills it at the rate", () => {
    let now = 0;
    const rate = new RequestRate(10, 10, () => now);
    const burst = Array.from({ length: 12 }, () => rate.take());
    expect(burst.filter(Boolean).length).toBe(10);
    expect(burst.slice(10)).toEqual([false, false]);
    now += 250; // a quarter of a second: 2.5 tokens
    expect([rate.take(), rate.take(), rate.take()]).toEqual([true, true, false]);
    now += 60_000; // a long pause refills to the burst, never beyond it
    expect(Array.from({ length: 11 }, () => rate.take()).filter(Boolean).length).toBe(10);
  });

  it("keeps the long-run rate whatever the pattern of asking", () => {
    let now = 0;
    const rate = new RequestRate(50, 50, () => now);
    let allowed = 0;
    for (let ms = 0; ms < 10_000; ms += 3) {
      now = ms;
      if (rate.take()) allowed += 1;
      if (rate.take()) allowed += 1;
    }
    // 10 s at 50/s, plus the initial burst
    expect(allowed).toBeGreaterThanOrEqual(500);
    expect(allowed).toBeLessThanOrEqual(551);
  });
});
