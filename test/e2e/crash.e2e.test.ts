import { checkContainerHost } from "@shells/backend-container";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CRASH_OPERATIONS, runCrashCycles } from "./crash-cycles.mjs";

// The control plane is killed (SIGKILL) at random points of every lifecycle operation and started
// again on the same data; bench/crash-bench.mjs runs the same cycles many more times.
const onContainers = process.getuid?.() === 0 && (await checkContainerHost()).available;
const CYCLES = CRASH_OPERATIONS.length;
/** The cycles whose operation is keyed (all but exec). */
const KEYED = Array.from(
  { length: CYCLES },
  (_, i) => CRASH_OPERATIONS[i % CRASH_OPERATIONS.length],
).filter((op) => op !== "exec").length;

describe("the control plane killed at random points", () => {
  it(`keeps shells, idempotency keys, history and the host consistent over ${CYCLES} crashes (${onContainers ? "container" : "simulator"} backend)`, async () => {
    expect(existsSync("apps/server/dist/server.js"), "build first: npx tsc -b").toBe(true);
    const dataDir = mkdtempSync(join(tmpdir(), "shells-crash-"));
    try {
      const report = await runCrashCycles({
        cycles: CYCLES,
        backend: onContainers ? "container" : "simulator",
        dataDir,
        imagesDir: process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images",
        ...(process.env.SHELLS_CRASH_SEED ? { seed: Number(process.env.SHELLS_CRASH_SEED) } : {}),
      });
      expect(report.failures).toEqual([]);
      expect(report.checked).toMatchObject({ cycles: CYCLES, keyedRetries: KEYED });
      expect(report.checked.chainEvents).toBeGreaterThan(0);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});
