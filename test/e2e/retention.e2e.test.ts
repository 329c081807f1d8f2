import ShellsClient, { GoneError, type ActivityEvent, type Run } from "@l1fe/shells";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

/** Runs the built `shells` binary against `server`. */
function cli(
  server: TestServer,
  args: string[],
): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
    child.stdin.end();
  });
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
/** The bytes the run copies to out/chart.png: every byte value, NULs included. */
const PNG = Uint8Array.from({ length: 256 }, (_, i) => i);

describe("a run's diff and artifacts on a container shell, kept until their retention runs out", () => {
  let server: TestServer;
  let client: ShellsClient;
  let run: Run;

  beforeAll(async () => {
    // Sweeps twice a second, so lowering the retention below takes effect at once.
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_RETENTION_SWEEP_SECONDS: "0.5" },
    });
    client = new ShellsClient({ baseUrl: server.url, token: server.token });
    const handle = await client.runs.create({
      language: "bash",
      files: [
        { path: "notes.txt", content: "alpha\nbeta\ngamma\n" },
        { path: "old.txt", content: "going away\n" },
        { path: "seed.bin", content: Buffer.from(PNG).toString("base64"), encoding: "base64" },
      ],
      command: [
        "sh",
        "-c",
        [
          "sed -i 's/beta/BETA/' notes.txt",
          "rm old.txt",
          "mkdir -p out",
          "printf 'new file\\n' > out/new.txt",
          "printf '<svg/>' > out/chart.svg",
          // A binary copied from one seeded whole: an added binary, and one appended to.
          "cp seed.bin out/chart.png",
          "printf 'x' >> seed.bin",
        ].join(" && "),
      ],
      artifacts: ["out/*.{png,svg}"],
    });
    run = await handle.result();
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  });

  it("keeps what the brace glob names and serves the diff through the SDK: patches for text, hashes for the binary", async () => {
    expect(run.status, run.error ?? "").toBe("succeeded");
    expect(run.artifacts.map((a) => a.path).sort()).toEqual(["out/chart.png", "out/chart.svg"]);
    const diff = await client.runs.handle(run.id).diff();
    const byPath = Object.fromEntries(diff.files.map((f) => [f.path, f]));
    expect(Object.keys(byPath).sort()).toEqual([
      "notes.txt",
      "old.txt",
      "out/chart.png",
      "out/chart.svg",
      "out/new.txt",
      "seed.bin",
    ]);
    expect(byPath["seed.bin"]).toMatchObject({
      change: "modified",
      kind: "binary",
      omitted: "binary",
      previousSizeBytes: 256,
      previousSha256: sha256(PNG),
      sizeBytes: 257,
    });
    expect(byPath["notes.txt"]?.patch).toContain(
      "--- a/notes.txt\n+++ b/notes.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n",
    );
    expect(byPath["old.txt"]).toMatchObject({ change: "removed", kind: "text" });
    expect(byPath["old.txt"]?.patch).toContain("-going away\n");
    expect(byPath["out/new.txt"]?.patch).toContain("--- /dev/null\n+++ b/out/new.txt\n");
    expect(byPath["out/chart.png"]).toMatchObject({
      change: "added",
      kind: "binary",
      patch: null,
      omitted: "binary",
      sizeBytes: 256,
      sha256: sha256(PNG),
    });
    expect(new Uint8Array(await client.runs.handle(run.id).artifact("out/chart.png"))).toEqual(PNG);
  });

  it("prints the diff with shells runs diff", async () => {
    const printed = await cli(server, ["runs", "diff", run.id]);
    expect(printed.exitCode, printed.stderr).toBe(0);
    expect(printed.stdout).toContain("-beta\n+BETA\n");
    expect(printed.stdout).toContain("+new file");
    expect(printed.stdout).toContain("# added binary file, diff omitted: binary file");
    expect(printed.stdout).toContain(`sha256 ${sha256(PNG)}`);
  });

  it("removes them once the project's retention runs out, records it, and answers artifact_expired", async () => {
    const set = await cli(server, ["retention", "set", "0", "--project", "default"]);
    expect(set.exitCode, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/in effect\s+0 days/);
    const handle = client.runs.handle(run.id);
    await expect
      .poll(async () => (await handle.audit()).map((e) => e.action), { timeout: 15_000 })
      .toContain("run.retention.expire");
    const expire = (await handle.audit()).find(
      (e: ActivityEvent) => e.action === "run.retention.expire",
    );
    expect(expire?.details).toMatchObject({
      retentionDays: 0,
      artifactsRemoved: 2,
      workspaceChangesRemoved: true,
      workspaceDiffRemoved: true,
    });
    const after = await handle.get();
    expect(after.expiredAt).toBeTruthy();
    // The manifest with hashes stays on the record; the bytes, changes and diff are gone.
    expect(after.artifacts.map((a) => a.sha256)).toContain(sha256(PNG));
    for (const read of [
      () => handle.diff(),
      () => handle.changes(),
      () => handle.artifact("out/chart.png"),
    ]) {
      const error = await read().then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(GoneError);
      expect((error as GoneError).code).toBe("artifact_expired");
    }
    const orgId = expire?.orgId ?? "";
    expect(existsSync(join(server.dataDir, "runs", orgId, run.id))).toBe(false);
    expect(existsSync(join(server.dataDir, "run-diffs", orgId, `${run.id}.json`))).toBe(false);
    const printed = await cli(server, ["runs", "diff", run.id]);
    expect(printed.exitCode).not.toBe(0);
    expect(printed.stderr).toContain("artifact_expired");
  });
});
