import {
  WORKSPACE_DIFF_LIMITS,
  canonicalSha256,
  verifyEvidenceBundle,
  type EvidenceBundle,
  type Run,
  type WorkspaceDiff,
} from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { sha256 } from "../audit/sha256.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { workspaceChanges, type TextCopy, type WorkspaceManifest } from "./workspace-changes.js";
import { workspaceDiff } from "./workspace-diff.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** A manifest of `files`: text content, or a copy left out for the reason given. */
function manifest(files: Record<string, string | TextCopy>): WorkspaceManifest {
  return {
    truncated: false,
    files: new Map(
      Object.entries(files).map(([path, content]) => {
        const copy = typeof content === "string" ? { text: content } : content;
        const key = typeof content === "string" ? content : JSON.stringify(content);
        return [
          path,
          {
            sizeBytes: Buffer.byteLength(key),
            modifiedAt: "t",
            sha256: canonicalSha256(sha256, key),
            copy,
          },
        ];
      }),
    ),
  };
}

async function diffOf(before: WorkspaceManifest, after: WorkspaceManifest) {
  return workspaceDiff(before, after, workspaceChanges(before, after));
}

describe("workspaceDiff", () => {
  it("gives unified diffs of text files added, removed and modified, and a manifest entry for binaries", async () => {
    const before = manifest({
      "edit.txt": "one\ntwo\nthree\n",
      "gone.txt": "bye\n",
      "img.bin": { omitted: "binary" },
    });
    const after = manifest({
      "edit.txt": "one\nTWO\nthree\n",
      "new/made.txt": "hello\n",
      "img.bin": { omitted: "file_too_large" },
    });
    const diff = await diffOf(before, after);
    const byPath = Object.fromEntries(diff.files.map((f) => [f.path, f]));
    expect(byPath["edit.txt"]).toMatchObject({ change: "modified", kind: "text", omitted: null });
    expect(byPath["edit.txt"]?.patch).toContain("--- a/edit.txt\n+++ b/edit.txt\n");
    expect(byPath["edit.txt"]?.patch).toContain("@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n");
    expect(byPath["gone.txt"]?.patch).toContain("--- a/gone.txt\n+++ /dev/null\n");
    expect(byPath["gone.txt"]?.patch).toContain("-bye\n");
    expect(byPath["new/made.txt"]?.patch).toContain("--- /dev/null\n+++ b/new/made.txt\n");
    expect(byPath["new/made.txt"]?.patch).toContain("+hello\n");
    expect(byPath["img.bin"]).toMatchObject({
      change: "modified",
      kind: "binary",
      patch: null,
      omitted: "binary",
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      previousSha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(diff.patchBytes).toBe(
      diff.files.reduce((sum, f) => sum + Buffer.byteLength(f.patch ?? ""), 0),
    );
  });

  it("omits a text file with no kept copy, a patch over the per-file limit and patches past the run's total, saying which", async () => {
    const line = "x".repeat(99) + "\n";
    // Each of these makes a patch of about 200 KiB: under the per-file limit, 21 of them over the total.
    const big = line.repeat(2000);
    const files: Record<string, string | TextCopy> = {
      "huge.txt": line.repeat(3000),
      "uncopied.txt": { omitted: "no_starting_copy" },
    };
    for (let i = 0; i < 25; i += 1) files[`many/${String(i).padStart(2, "0")}.txt`] = big;
    const diff = await diffOf(manifest({ "uncopied.txt": "a\n" }), manifest(files));
    const byPath = Object.fromEntries(diff.files.map((f) => [f.path, f]));
    expect(byPath["huge.txt"]).toMatchObject({ patch: null, omitted: "diff_too_large" });
    expect(byPath["uncopied.txt"]).toMatchObject({ patch: null, omitted: "no_starting_copy" });
    const many = diff.files.filter((f) => f.path.startsWith("many/"));
    const kept = many.filter((f) => f.patch !== null);
    expect(kept.length).toBeGreaterThan(10);
    expect(many.slice(kept.length).every((f) => f.omitted === "total_too_large")).toBe(true);
    expect(diff.patchBytes).toBeLessThanOrEqual(WORKSPACE_DIFF_LIMITS.patchBytesTotal);
  });
});

describe("workspaceDiff on files too costly to diff", () => {
  it("omits a rewrite whose diff runs past its time limit as diff_too_large, and still diffs the rest", async () => {
    // Two unrelated texts of 12,000 lines: a patch under the size limit (about 170 KiB), but an edit
    // script as long as both, which takes the diff past its time limit.
    let seed = 1;
    const random = () => {
      seed = (seed * 48271) % 2147483647;
      return seed.toString(36);
    };
    const text = () => Array.from({ length: 12_000 }, random).join("\n") + "\n";
    const diff = await diffOf(
      manifest({ "big.txt": text(), "small.txt": "a\n" }),
      manifest({ "big.txt": text(), "small.txt": "b\n" }),
    );
    expect(diff.files.map((f) => [f.path, f.omitted])).toEqual([
      ["big.txt", "diff_too_large"],
      ["small.txt", null],
    ]);
  });
});

describe("a run's workspace diff", () => {
  async function finished(a: TestApp, id: string): Promise<Run> {
    await expect
      .poll(async () => (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>().status, {
        timeout: 10_000,
      })
      .not.toBe("running");
    return (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>();
  }

  it("is served by the API, recorded by hash in run.finish, and carried by a v2 evidence bundle that verifies", async () => {
    t = await createTestApp();
    const started = await t.call("POST", "/api/v1/runs", {
      language: "bash",
      files: [
        { path: "notes.md", content: "# Notes\nfirst\n" },
        {
          path: "blob.bin",
          content: Buffer.from([0, 1, 2, 3]).toString("base64"),
          encoding: "base64",
        },
      ],
      command: [
        "sh",
        "-c",
        "printf '# Notes\\nsecond\\n' > notes.md; printf '\\000\\377\\000' > blob.bin",
      ],
    });
    expect(started.statusCode, started.body).toBe(201);
    const run = await finished(t, started.json<Run>().id);
    expect(run.status).toBe("succeeded");

    const res = await t.call("GET", `/api/v1/runs/${run.id}/diff`);
    expect(res.statusCode, res.body).toBe(200);
    const diff = res.json<WorkspaceDiff>();
    expect(diff.files.map((f) => [f.path, f.kind, f.omitted])).toEqual([
      ["blob.bin", "binary", "binary"],
      ["notes.md", "text", null],
    ]);
    expect(diff.files[1]?.patch).toContain("-first\n+second\n");

    const finish = (await t.call("GET", `/api/v1/runs/${run.id}/activity`))
      .json<{ items: { action: string; details: Record<string, unknown> }[] }>()
      .items.find((e) => e.action === "run.finish");
    expect(finish?.details["workspaceDiffSha256"]).toBe(canonicalSha256(sha256, diff));

    const bundle = (await t.call("GET", `/api/v1/runs/${run.id}/evidence`)).json<EvidenceBundle>();
    expect(bundle.format).toBe("shells-evidence/v3");
    expect(bundle.workspaceDiff).toEqual(diff);
    const verified = await verifyEvidenceBundle(sha256, bundle);
    expect(verified.problem).toBeNull();
    expect(verified.checked).toContain("workspace diff (2 files) against the run.finish event");
    // A patch edited after the fact no longer matches the hash the signed event holds.
    const forged = structuredClone(bundle);
    const file = forged.workspaceDiff?.files[1];
    if (file) file.patch = (file.patch ?? "").replace("+second", "+innocent");
    expect((await verifyEvidenceBundle(sha256, forged)).problem).toBe(
      "the workspace diff differs from the one the run.finish event recorded",
    );
  });

  it("answers invalid_state while the run runs", async () => {
    t = await createTestApp();
    const id = (
      await t.call("POST", "/api/v1/runs", { language: "bash", command: ["sleep", "30"] })
    ).json<Run>().id;
    const running = await t.call("GET", `/api/v1/runs/${id}/diff`);
    expect(running.statusCode).toBe(409);
    expect(running.json().error.code).toBe("invalid_state");
    await t.call("DELETE", `/api/v1/runs/${id}`);
  });
});
