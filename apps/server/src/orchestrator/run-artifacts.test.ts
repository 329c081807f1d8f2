import type { Run } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function runToEnd(a: TestApp, body: Record<string, unknown>): Promise<Run> {
  const started = await a.call("POST", "/api/v1/runs", { language: "bash", ...body });
  expect(started.statusCode, started.body).toBe(201);
  const id = started.json<Run>().id;
  await expect
    .poll(async () => (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>().status, {
      timeout: 10_000,
    })
    .not.toBe("running");
  return (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>();
}

/** Four files of 4, 8, 12 and 16 bytes under out/. */
const FOUR_FILES = [1, 2, 3, 4].map((i) => ({ path: `out/${i}.txt`, content: "x".repeat(4 * i) }));

describe("the limits on what a run keeps", () => {
  it("keeps at most the configured count and bytes of artifacts, listing the rest as skipped with the reason", async () => {
    t = await createTestApp({
      env: { SHELLS_RUN_ARTIFACT_MAX_COUNT: "2", SHELLS_RUN_ARTIFACT_MAX_BYTES: "14" },
    });
    const run = await runToEnd(t, {
      files: FOUR_FILES,
      command: ["true"],
      artifacts: ["out/*.txt"],
    });
    expect(run.status).toBe("succeeded");
    // 4 + 8 bytes fit the 14-byte quota; 12 bytes do not fit what is left; the 4th is past the count.
    expect(run.artifacts.map((a) => [a.path, a.sizeBytes])).toEqual([
      ["out/1.txt", 4],
      ["out/2.txt", 8],
    ]);
    expect(run.skippedArtifacts?.map((s) => [s.path, s.reason])).toEqual([
      ["out/3.txt", "count_exceeded"],
      ["out/4.txt", "count_exceeded"],
    ]);
  });

  it("skips an artifact over what is left of the byte quota as quota_exceeded", async () => {
    t = await createTestApp({ env: { SHELLS_RUN_ARTIFACT_MAX_BYTES: "14" } });
    const run = await runToEnd(t, {
      files: FOUR_FILES,
      command: ["true"],
      artifacts: ["out/*.txt"],
    });
    expect(run.artifacts.map((a) => a.path)).toEqual(["out/1.txt", "out/2.txt"]);
    expect(run.skippedArtifacts?.map((s) => [s.path, s.sizeBytes, s.reason])).toEqual([
      ["out/3.txt", 12, "quota_exceeded"],
      ["out/4.txt", 16, "quota_exceeded"],
    ]);
  });

  it("keeps nothing that would leave the data dir less free space than its reserve: artifacts are skipped as host_disk_low, the diff is not kept", async () => {
    // A reserve of 1 TiB: more than the disks here have free.
    t = await createTestApp({ env: { SHELLS_DATA_DIR_RESERVE_MB: String(1024 ** 2) } });
    const run = await runToEnd(t, {
      files: FOUR_FILES,
      command: ["true"],
      artifacts: ["out/1.txt"],
    });
    expect(run.status).toBe("succeeded");
    expect(run.artifacts).toEqual([]);
    expect(run.skippedArtifacts).toEqual([
      { path: "out/1.txt", sizeBytes: 4, reason: "host_disk_low" },
    ]);
    const diff = await t.call("GET", `/api/v1/runs/${run.id}/diff`);
    expect(diff.statusCode).toBe(409);
    expect(diff.json().error.message).toContain("reserve");
    // The change list (in the store, bounded) is still there.
    expect((await t.call("GET", `/api/v1/runs/${run.id}/changes`)).statusCode).toBe(200);
  });
});
