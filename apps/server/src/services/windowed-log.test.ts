import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { WindowedLog, type WindowSpan } from "./windowed-log.js";

interface Item {
  source: string;
  bytes: number;
}

interface Written {
  first: string;
  last: string;
  count: number;
  sum: number;
  span?: WindowSpan | undefined;
}

function newLog(maxOpenWindows?: number) {
  const written: Written[] = [];
  const log = new WindowedLog<Item>({
    windowMs: 1000,
    maxOpenWindows,
    logger: pino({ enabled: false }),
    what: "test items",
    keyOf: (item) => item.source,
    overflowKey: () => "*",
    weight: (item) => item.bytes,
    write: async (first, last, count, sum, span) => {
      written.push({ first: first.source, last: last.source, count, sum, span });
    },
  });
  return { log, written };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("WindowedLog", () => {
  it("writes the first item at once and the repeats of its window as one event when it closes", async () => {
    vi.useFakeTimers();
    const { log, written } = newLog();
    await log.record({ source: "a", bytes: 5 });
    await log.record({ source: "a", bytes: 7 });
    await log.record({ source: "a", bytes: 11 });
    await log.record({ source: "b", bytes: 1 });
    expect(written).toEqual([
      { first: "a", last: "a", count: 1, sum: 5, span: undefined },
      { first: "b", last: "b", count: 1, sum: 1, span: undefined },
    ]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(written.slice(2)).toEqual([
      { first: "a", last: "a", count: 2, sum: 18, span: expect.any(Object) as WindowSpan },
    ]);
    // The next item of a closed window opens a new one and is written at once.
    await log.record({ source: "a", bytes: 2 });
    expect(written.at(-1)).toMatchObject({ first: "a", count: 1, sum: 2 });
    // Counts add up to the items recorded: 3 + 1 + 1.
    expect(written.reduce((total, w) => total + w.count, 0)).toBe(5);
  });

  it("shares one window among new keys past its bound, and flushes by the first item", async () => {
    const { log, written } = newLog(2);
    for (const source of ["a", "b", "c", "d", "e"]) await log.record({ source, bytes: 1 });
    // a and b opened windows; c opened the overflow window; d and e counted into it.
    expect(written.map((w) => w.first)).toEqual(["a", "b", "c"]);
    await log.flush((first) => first.source === "c");
    expect(written.at(-1)).toMatchObject({ first: "c", last: "e", count: 2, sum: 2 });
    await log.record({ source: "a", bytes: 3 });
    await log.close();
    expect(written.at(-1)).toMatchObject({ first: "a", count: 1, sum: 3 });
    expect(written).toHaveLength(5);
  });
});
