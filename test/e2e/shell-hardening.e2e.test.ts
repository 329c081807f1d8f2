import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

// Host-resource limits, snapshot quotas and secret environment on real container shells: the
// archive sizes and the echoed secrets are only real where code really runs.
const live = process.env["SHELLS_TEST_BACKEND"] === "container";

let server: TestServer;

async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T; text: string }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T, text };
}

interface ErrorAnswer {
  error: { code: string; details: Record<string, unknown> };
}

describe.skipIf(!live)("container shells: limits, quotas and secrets", () => {
  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
  }, 300_000);
  afterAll(async () => {
    await server?.close();
  });

  it("refuses limits beyond the host (64 cpus, 96 GiB, 65,536 pids, 150 GiB disk) with limit_exceeded", async () => {
    for (const [field, asked] of [
      ["cpu", 64],
      ["memoryMb", 96 * 1024],
      ["pids", 65536],
      ["diskMb", 150 * 1024],
    ] as const) {
      const res = await api<ErrorAnswer>("POST", "/api/v1/shells", {
        language: "bash",
        resources: { [field]: asked },
      });
      expect(res.status, res.text).toBe(422);
      expect(res.body.error.code).toBe("limit_exceeded");
      expect(res.body.error.details).toMatchObject({ field: `resources.${field}`, asked });
    }
    const listed = await api<{ items: unknown[] }>("GET", "/api/v1/shells");
    expect(listed.body.items).toEqual([]);
  });

  it("counts real snapshot archive sizes against the shell's quota and refuses past it", async () => {
    const set = await api("PATCH", "/api/v1/org/policy", {
      snapshotQuota: { countPerShell: 3, mbPerShell: 2, mbPerOrg: 100 },
    });
    expect(set.status, set.text).toBe(200);
    try {
      const shell = await api<{ id: string }>("POST", "/api/v1/shells", { language: "bash" });
      expect(shell.status, shell.text).toBe(201);
      const id = shell.body.id;
      // Random bytes do not compress: the archive is as large as the file.
      const write = await api<{ exitCode: number }>("POST", `/api/v1/shells/${id}/exec`, {
        command: ["sh", "-c", "head -c 1500000 /dev/urandom > /workspace/blob"],
      });
      expect(write.body.exitCode).toBe(0);
      const first = await api<{ snapshot: { sizeBytes: number } }>(
        "POST",
        `/api/v1/shells/${id}/actions/snapshot`,
        { name: "one" },
      );
      expect(first.status, first.text).toBe(200);
      expect(first.body.snapshot.sizeBytes).toBeGreaterThan(1_400_000);
      const second = await api<ErrorAnswer>("POST", `/api/v1/shells/${id}/actions/snapshot`, {
        name: "two",
      });
      expect(second.status, second.text).toBe(409);
      expect(second.body.error.code).toBe("quota_exceeded");
      expect(second.body.error.details).toMatchObject({
        quota: "mbPerShell",
        limit: 2 * 1024 * 1024,
      });
      expect(second.body.error.details["used"]).toBe(first.body.snapshot.sizeBytes);
      const snapshots = await api<{ name: string }[]>("GET", `/api/v1/shells/${id}/snapshots`);
      expect(JSON.stringify(snapshots.body)).not.toContain('"two"');
    } finally {
      await api("PATCH", "/api/v1/org/policy", {
        snapshotQuota: { countPerShell: 10, mbPerShell: 10240, mbPerOrg: 51200 },
      });
    }
  }, 120_000);

  it("keeps env secrets and secretEnv values out of the shell record, its logs, the history and a run's frames", async () => {
    const token = "s3cr3t-api-token-4f1c";
    const pass = "db-pass-90ae7d";
    const created = await api<{ id: string; envKeys: string[]; secretEnvKeys: string[] }>(
      "POST",
      "/api/v1/shells",
      { language: "bash", env: { API_TOKEN: token }, secretEnv: { DB_PASS: pass } },
    );
    expect(created.status, created.text).toBe(201);
    const id = created.body.id;
    expect(created.body.secretEnvKeys).toEqual(["DB_PASS"]);
    const exec = await api<{ stdout: string }>("POST", `/api/v1/shells/${id}/exec`, {
      command: ["sh", "-c", "echo $API_TOKEN $DB_PASS"],
    });
    // The exec's own answer is the user's output, as the command printed it.
    expect(exec.body.stdout).toBe(`${token} ${pass}\n`);

    const run = await api<{ id: string }>("POST", "/api/v1/runs", {
      language: "bash",
      command: ["sh", "-c", "echo $RUN_TOKEN $RUN_SECRET_VALUE"],
      env: { RUN_TOKEN: token },
      secretEnv: { RUN_SECRET_VALUE: pass },
    });
    expect(run.status, run.text).toBe(201);
    await expect
      .poll(
        async () =>
          (await api<{ status: string }>("GET", `/api/v1/runs/${run.body.id}`)).body.status,
        {
          timeout: 60_000,
        },
      )
      .not.toBe("running");
    const frames = await api<{ items: { type: string; data: unknown }[] }>(
      "GET",
      `/api/v1/runs/${run.body.id}/stream`,
    );
    const streamed = frames.body.items
      .filter((f) => f.type === "stdout")
      .map((f) => String(f.data))
      .join("");
    // Streamed output is stored as frames, so it is masked (the run's command did echo both).
    expect(streamed).toBe("[redacted] [redacted]\n");

    const seen = [
      (await api("GET", `/api/v1/shells/${id}`)).text,
      (await api("GET", "/api/v1/shells")).text,
      (await api("POST", `/api/v1/shells/${id}/actions/logs`, {})).text,
      (await api("GET", "/api/v1/activity?limit=200")).text,
      frames.text,
      (await api("GET", `/api/v1/runs/${run.body.id}`)).text,
      (await api("GET", `/api/v1/runs/${run.body.id}/activity`)).text,
    ];
    for (const text of seen) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(pass);
    }
  }, 180_000);
});
