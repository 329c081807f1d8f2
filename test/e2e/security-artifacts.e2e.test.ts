import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

/** Runs execute code only on real sandboxes; the pattern checks hold on the simulator too. */
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";
const onContainer = backend === "container";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ backend });
});
afterAll(async () => {
  await server?.close();
});

async function api<T = unknown>(path: string, init: RequestInit = {}) {
  const res = await fetch(`${server.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(typeof init.body === "string" ? { "content-type": "application/json" } : {}),
    },
  });
  const text = await res.text();
  return { status: res.status, body: (text.startsWith("{") ? JSON.parse(text) : text) as T };
}

interface RunBody {
  id: string;
  status: string;
  artifacts: { path: string; sizeBytes: number }[];
  skippedArtifacts?: { path: string; sizeBytes: number; reason: string }[];
}

async function finished(id: string): Promise<RunBody> {
  await expect
    .poll(async () => (await api<RunBody>(`/api/v1/runs/${id}`)).body.status, {
      timeout: 120_000,
      interval: 250,
    })
    .not.toBe("running");
  return (await api<RunBody>(`/api/v1/runs/${id}/result`)).body;
}

/** Bytes actually stored under a directory on the host (sparse files count what they occupy). */
function storedBytes(dir: string): number {
  return Number(
    execFileSync("du", ["-sb", "--apparent-size", dir], { encoding: "utf8" }).split("\t")[0],
  );
}

describe("artifact patterns cannot hold the control plane", () => {
  it("refuses a backtracking pattern with validation_failed while other requests are answered", async () => {
    const longName = `${"a".repeat(200)}.txt`;
    const pathological = `${"*a".repeat(24)}*b`;
    let slowest = 0;
    let stop = false;
    const probe = (async () => {
      while (!stop) {
        const started = performance.now();
        await (await fetch(`${server.url}/healthz`)).arrayBuffer();
        slowest = Math.max(slowest, performance.now() - started);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const res = await api<{ error: { code: string } }>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["true"],
        files: [{ path: longName, content: "x" }],
        artifacts: [pathological],
      }),
    });
    // Matching it would take the loop for as long as the run lasts; give any such run time.
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await probe;
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("validation_failed");
    expect(slowest).toBeLessThan(1000);

    const tooMany = await api<{ error: { code: string } }>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["true"],
        artifacts: Array.from({ length: 33 }, (_, i) => `${i}.txt`),
      }),
    });
    expect(tooMany.body.error.code).toBe("validation_failed");
  }, 60_000);

  it("matches the worst pattern it accepts against a long name quickly", async () => {
    const longName = `${"a".repeat(250)}.txt`;
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["true"],
        files: [{ path: `deep/${longName}`, content: "x" }],
        artifacts: Array.from({ length: 32 }, (_, i) => `**/**/*a*${"a".repeat(i)}b`),
      }),
    });
    expect(started.status).toBe(201);
    const run = await finished(started.body.id);
    expect(run.artifacts).toEqual([]);
  }, 120_000);
});

describe("artifacts are bounded and die with their run", () => {
  it.skipIf(!onContainer)(
    "keeps no more than the run's quota of a sparse 1 GiB file and large files, and says why",
    async () => {
      const started = await api<RunBody>("/api/v1/runs", {
        method: "POST",
        body: JSON.stringify({
          language: "bash",
          command: [
            "sh",
            "-c",
            "truncate -s 1G sparse.bin && head -c 40000000 /dev/zero > a.bin && head -c 40000000 /dev/zero > b.bin && echo small > c.bin",
          ],
          artifacts: ["*.bin"],
        }),
      });
      expect(started.status).toBe(201);
      const run = await finished(started.body.id);
      expect(run.status).toBe("succeeded");
      const reasons = Object.fromEntries(
        (run.skippedArtifacts ?? []).map((s) => [s.path, [s.reason, s.sizeBytes]]),
      );
      expect(reasons["sparse.bin"]).toEqual(["quota_exceeded", 1024 ** 3]);
      // One of the two 40 MB files fits the 64 MiB quota, the other does not.
      expect(run.artifacts.map((a) => a.path)).toContain("c.bin");
      expect(run.artifacts.filter((a) => a.sizeBytes === 40_000_000)).toHaveLength(1);
      expect(Object.values(reasons).filter(([r]) => r === "quota_exceeded")).toHaveLength(2);

      const dir = join(server.dataDir, "runs");
      expect(storedBytes(dir)).toBeLessThanOrEqual(64 * 1024 * 1024);

      const deleted = await api<RunBody>(`/api/v1/runs/${run.id}`, { method: "DELETE" });
      expect(deleted.status).toBe(200);
      expect(deleted.body.artifacts).toEqual([]);
      const orgDirs = execFileSync("find", [dir, "-name", run.id], { encoding: "utf8" });
      expect(orgDirs.trim()).toBe("");
      const gone = await api<{ error: { code: string } }>(
        `/api/v1/runs/${run.id}/artifacts/content?path=c.bin`,
      );
      expect(gone.body.error.code).toBe("file_not_found");
    },
    300_000,
  );

  it.skipIf(!onContainer)(
    "does not follow a link named as an artifact",
    async () => {
      const started = await api<RunBody>("/api/v1/runs", {
        method: "POST",
        body: JSON.stringify({
          language: "bash",
          command: [
            "sh",
            "-c",
            'ln -s /dev/zero zero.out && echo /workspace/zero.out > "$SHELLS_ARTIFACTS"',
          ],
        }),
      });
      const run = await finished(started.body.id);
      expect(run.artifacts).toEqual([]);
      expect(run.skippedArtifacts).toEqual([
        expect.objectContaining({ path: "zero.out", reason: "not_a_file" }),
      ]);
    },
    300_000,
  );

  it("deletes a run's artifacts from the host when the run is deleted", async () => {
    // The simulator keeps the seeded file as an artifact without running anything.
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["true"],
        files: [{ path: "kept.txt", content: "kept\n" }],
        artifacts: ["kept.txt"],
      }),
    });
    const run = await finished(started.body.id);
    expect(run.artifacts.map((a) => a.path)).toEqual(["kept.txt"]);
    const onHost = execFileSync("find", [join(server.dataDir, "runs"), "-name", run.id], {
      encoding: "utf8",
    }).trim();
    expect(onHost).not.toBe("");
    expect(existsSync(join(onHost, "kept.txt"))).toBe(true);
    expect((await api(`/api/v1/runs/${run.id}`, { method: "DELETE" })).status).toBe(200);
    expect(existsSync(onHost)).toBe(false);
    expect((await api<RunBody>(`/api/v1/runs/${run.id}`)).body.artifacts).toEqual([]);
  }, 120_000);
});
