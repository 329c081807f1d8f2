import type { Run, WorkspaceChanges } from "@shells/contract";
import { createHash } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { workspaceChanges, type WorkspaceManifest } from "./workspace-changes.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const sha = (text: string) => createHash("sha256").update(text).digest("hex");

async function finished(a: TestApp, id: string): Promise<Run> {
  await expect
    .poll(async () => (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>().status, {
      timeout: 10_000,
    })
    .not.toBe("running");
  return (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>();
}

describe("a run's workspace changes", () => {
  it("lists files added, removed and modified since the run started, with sizes and hashes before and after", async () => {
    t = await createTestApp();
    const started = await t.call("POST", "/api/v1/runs", {
      language: "bash",
      files: [
        { path: "keep.txt", content: "same\n" },
        { path: "edit.txt", content: "before\n" },
        { path: "gone.txt", content: "bye\n" },
      ],
      command: [
        "sh",
        "-c",
        "echo after > edit.txt; rm gone.txt; mkdir -p out; echo new > out/made.txt",
      ],
    });
    expect(started.statusCode, started.body).toBe(201);
    const run = await finished(t, started.json<Run>().id);
    expect(run.status).toBe("succeeded");

    const res = await t.call("GET", `/api/v1/runs/${run.id}/changes`);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<WorkspaceChanges>()).toEqual({
      truncated: false,
      changes: [
        {
          path: "edit.txt",
          change: "modified",
          sizeBytes: 6,
          sha256: sha("after\n"),
          previousSizeBytes: 7,
          previousSha256: sha("before\n"),
        },
        {
          path: "gone.txt",
          change: "removed",
          sizeBytes: null,
          sha256: null,
          previousSizeBytes: 4,
          previousSha256: sha("bye\n"),
        },
        {
          path: "out/made.txt",
          change: "added",
          sizeBytes: 4,
          sha256: sha("new\n"),
          previousSizeBytes: null,
          previousSha256: null,
        },
      ],
    });

    // The signed run.finish event records how many and their hash, so a bundle proves them.
    const finish = (await t.call("GET", `/api/v1/runs/${run.id}/activity`))
      .json<{ items: { action: string; details: Record<string, unknown> }[] }>()
      .items.find((e) => e.action === "run.finish");
    expect(finish?.details).toMatchObject({ workspaceChanges: 3 });
    expect(finish?.details["workspaceChangesSha256"]).toMatch(/^[0-9a-f]{64}$/);
    const bundle = (await t.call("GET", `/api/v1/runs/${run.id}/evidence`)).json();
    expect(bundle.workspaceChanges).toEqual(res.json());
  });

  it("answers invalid_state for a run that recorded none, and not_found for an unknown run", async () => {
    t = await createTestApp();
    const started = await t.call("POST", "/api/v1/runs", {
      language: "bash",
      command: ["sleep", "30"],
    });
    const id = started.json<Run>().id;
    const running = await t.call("GET", `/api/v1/runs/${id}/changes`);
    expect(running.statusCode).toBe(409);
    expect(running.json().error.code).toBe("invalid_state");
    await t.call("DELETE", `/api/v1/runs/${id}`);
    const cancelled = await t.call("GET", `/api/v1/runs/${id}/changes`);
    expect(cancelled.json().error.message).toContain("cancelled");
    const unknown = await t.call("GET", "/api/v1/runs/run-nope/changes");
    expect(unknown.statusCode).toBe(404);
  });
});

describe("workspaceChanges", () => {
  const manifest = (
    entries: [string, number, string, string | null][],
    truncated = false,
  ): WorkspaceManifest => ({
    files: new Map(
      entries.map(([path, sizeBytes, modifiedAt, sha256]) => [
        path,
        { sizeBytes, modifiedAt, sha256, copy: { omitted: "file_too_large" as const } },
      ]),
    ),
    truncated,
  });

  it("compares files without a hash on either side by size and modification time", () => {
    const before = manifest([
      ["big-same.bin", 10, "t1", null],
      ["big-touched.bin", 10, "t1", null],
      ["hashed-then-not.bin", 10, "t1", "a".repeat(64)],
    ]);
    const after = manifest(
      [
        ["big-same.bin", 10, "t1", null],
        ["big-touched.bin", 10, "t2", null],
        ["hashed-then-not.bin", 10, "t1", null],
      ],
      true,
    );
    expect(workspaceChanges(before, after)).toEqual({
      truncated: true,
      changes: [
        {
          path: "big-touched.bin",
          change: "modified",
          sizeBytes: 10,
          sha256: null,
          previousSizeBytes: 10,
          previousSha256: null,
        },
      ],
    });
  });
});
