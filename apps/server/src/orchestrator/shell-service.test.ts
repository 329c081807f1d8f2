import { CAPABILITY_LEGAL_IN, Capability, ShellStatus, type Shell } from "@shells/contract";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "../store/database.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp;

beforeAll(async () => {
  t = await createTestApp({ openStore: () => openSqliteStore(":memory:") });
});

afterAll(async () => {
  await t.close();
});

/** A new shell with one snapshot (so `restore` has a target), brought into `status`. */
async function shellIn(status: ShellStatus): Promise<Shell> {
  const created = await t.call("POST", "/api/v1/shells", { language: "bash" });
  expect(created.statusCode).toBe(201);
  const shell = created.json<Shell>();
  const snap = await t.call("POST", `/api/v1/shells/${shell.id}/actions/snapshot`, {
    name: "base",
  });
  expect(snap.statusCode).toBe(200);
  if (status === "stopped") {
    expect((await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, {})).statusCode).toBe(
      200,
    );
  } else if (status === "paused") {
    expect((await t.call("POST", `/api/v1/shells/${shell.id}/actions/pause`, {})).statusCode).toBe(
      200,
    );
  } else if (status === "deleted") {
    expect((await t.call("DELETE", `/api/v1/shells/${shell.id}`)).statusCode).toBe(200);
  } else if (status !== "running") {
    // `provisioning` and `error` are states the backend puts a shell in (a create under way, a
    // sandbox lost with its host); the store is set to them as the service would.
    await t.store.db
      .updateTable("shells")
      .set({ status, status_reason: `forced ${status}` })
      .where("id", "=", shell.id)
      .execute();
  }
  return shell;
}

describe("the lifecycle state machine", () => {
  const states = ShellStatus.options;
  const cases = Capability.options.flatMap((capability) =>
    states.map((status) => ({
      capability,
      status,
      legal: CAPABILITY_LEGAL_IN[capability].includes(status),
    })),
  );

  it.each(cases)(
    "$capability on a $status shell: legal=$legal",
    async ({ capability, status, legal }) => {
      const shell = await shellIn(status);
      const res = await t.call("POST", `/api/v1/shells/${shell.id}/actions/${capability}`, {});
      if (legal) {
        expect(res.statusCode, res.body).toBe(200);
        expect(res.json<{ capability: string }>().capability).toBe(capability);
      } else {
        expect(res.statusCode, res.body).toBe(409);
        expect(res.json<{ error: { code: string } }>().error.code).toBe("invalid_state");
      }
    },
  );

  it.each(states)("exec on a %s shell succeeds only when running", async (status) => {
    const shell = await shellIn(status);
    const res = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["true"] });
    if (status === "running") expect(res.statusCode, res.body).toBe(200);
    else {
      expect(res.statusCode, res.body).toBe(409);
      expect(res.json<{ error: { code: string } }>().error.code).toBe(
        status === "paused" ? "shell_paused" : "invalid_state",
      );
    }
  });

  it("pauses and resumes a shell: the status, the reason, files readable, execs refused", async () => {
    const shell = await shellIn("running");
    await t.call("PUT", `/api/v1/shells/${shell.id}/files/content?path=/workspace/a.txt`, "kept", {
      "content-type": "application/octet-stream",
    });
    const paused = await t.call("POST", `/api/v1/shells/${shell.id}/actions/pause`, {});
    expect(paused.statusCode, paused.body).toBe(200);
    const result = paused.json<{ shell: Shell; pause: { method: string } }>();
    expect(result.shell.status).toBe("paused");
    expect(result.shell.statusReason).toMatch(/^paused: /);
    expect(result.pause.method).toBe("freeze");
    const read = await t.call(
      "GET",
      `/api/v1/shells/${shell.id}/files/content?path=/workspace/a.txt`,
    );
    expect(read.statusCode, read.body).toBe(200);
    expect(read.body).toBe("kept");
    const write = await t.call(
      "PUT",
      `/api/v1/shells/${shell.id}/files/content?path=/workspace/b.txt`,
      "x",
      {
        "content-type": "application/octet-stream",
      },
    );
    expect(write.statusCode).toBe(409);
    expect(write.json<{ error: { code: string } }>().error.code).toBe("shell_paused");
    const resumed = await t.call("POST", `/api/v1/shells/${shell.id}/actions/resume`, {});
    expect(resumed.json<{ shell: Shell }>().shell).toMatchObject({
      status: "running",
      statusReason: null,
    });
    const exec = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
      command: ["cat", "/workspace/a.txt"],
    });
    expect(exec.json<{ stdout: string }>().stdout).toBe("kept");
  });
});

describe("admission of resource limits", () => {
  it("refuses limits above the org maximum or the host, naming field, asked value and maximum", async () => {
    for (const [field, value] of [
      ["cpu", 64],
      ["memoryMb", 96 * 1024],
      ["pids", 65536],
      ["diskMb", 150 * 1024],
    ] as const) {
      const res = await t.call("POST", "/api/v1/shells", {
        language: "bash",
        resources: { [field]: value },
      });
      expect(res.statusCode, res.body).toBe(422);
      const { error } = res.json<{
        error: { code: string; details: { field: string; asked: number; maximum: number } };
      }>();
      expect(error.code).toBe("limit_exceeded");
      expect(error.details.field).toBe(`resources.${field}`);
      expect(error.details.asked).toBe(value);
      expect(error.details.maximum).toBeLessThan(value);
    }
  });

  it("follows the org policy's maximum", async () => {
    const set = await t.call("PATCH", "/api/v1/org/policy", {
      maxResources: { cpu: 1, memoryMb: 256, pids: 64, diskMb: 512 },
    });
    expect(set.statusCode, set.body).toBe(200);
    try {
      const over = await t.call("POST", "/api/v1/shells", {
        language: "bash",
        resources: { memoryMb: 512 },
      });
      expect(over.json<{ error: { code: string; details: unknown } }>().error).toMatchObject({
        code: "limit_exceeded",
        details: { field: "resources.memoryMb", asked: 512, maximum: 256, limitedBy: "policy" },
      });
      const within = await t.call("POST", "/api/v1/shells", {
        language: "bash",
        resources: { memoryMb: 256 },
      });
      expect(within.statusCode, within.body).toBe(201);
    } finally {
      await t.call("PATCH", "/api/v1/org/policy", {
        maxResources: { cpu: 16, memoryMb: 65536, pids: 4096, diskMb: 102400 },
      });
    }
  });
});

describe("destructive capabilities behind the approval gate", () => {
  it.each(["restore", "restart"] as const)(
    "%s asks for typed confirmation when the org gates it",
    async (capability) => {
      await t.call("PATCH", "/api/v1/org/policy", { approvalGates: { [capability]: "confirm" } });
      try {
        const shell = await shellIn("running");
        const bare = await t.call("POST", `/api/v1/shells/${shell.id}/actions/${capability}`, {});
        expect(bare.statusCode, bare.body).toBe(428);
        const confirmed = await t.call("POST", `/api/v1/shells/${shell.id}/actions/${capability}`, {
          confirm: shell.name,
        });
        expect(confirmed.statusCode, confirmed.body).toBe(200);
      } finally {
        await t.call("PATCH", "/api/v1/org/policy", { approvalGates: { [capability]: "none" } });
      }
    },
  );
});

describe("secret environment", () => {
  it("is never returned, and its values and secret-looking ones never reach logs or history", async () => {
    const created = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      env: {
        API_TOKEN: "tok-visible-guess",
        DATABASE_URL: "postgres://u:pw-9931@db/x",
        MODE: "dev",
      },
      secretEnv: { DB_PASS: "explicit-2b7f" },
    });
    expect(created.statusCode, created.body).toBe(201);
    const shell = created.json<Shell>();
    expect(shell.envKeys).toEqual(["API_TOKEN", "DATABASE_URL", "MODE"]);
    expect(shell.secretEnvKeys).toEqual(["DB_PASS"]);
    const exec = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
      command: [
        "echo",
        "tok-visible-guess",
        "explicit-2b7f",
        "postgres://u:pw-9931@db/x",
        "x-exec-99",
      ],
      secretEnv: { ONE_OFF: "x-exec-99" },
    });
    expect(exec.statusCode, exec.body).toBe(200);
    const logs = await t.call("POST", `/api/v1/shells/${shell.id}/actions/logs`, {});
    const activity = await t.call("GET", "/api/v1/activity?limit=200");
    const stored = await t.store.db
      .selectFrom("shells")
      .select(["env", "secret_env"])
      .where("id", "=", shell.id)
      .executeTakeFirstOrThrow();
    for (const text of [JSON.stringify(shell), logs.body, activity.body, stored.secret_env ?? ""]) {
      for (const secret of ["tok-visible-guess", "explicit-2b7f", "pw-9931", "x-exec-99"])
        expect(text).not.toContain(secret);
    }
    expect(logs.body).toContain("[redacted]");
  });
});

describe("forking a shell", () => {
  interface ForkBody {
    parent: string;
    shells: Shell[];
    failed: { index: number; name: string | null; code: string }[];
    state: { filesystem: { method: string }; memory: string };
  }

  it("makes count shells from the parent's files and settings, each an audited create of its own", async () => {
    const created = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      network: "localhost",
      resources: { memoryMb: 256 },
      env: { MODE: "dev" },
      secretEnv: { API_KEY: "k-forked-secret" },
      ttlSeconds: 3600,
    });
    const parent = created.json<Shell>();
    await t.call("POST", `/api/v1/shells/${parent.id}/exec`, {
      command: ["sh", "-c", "echo v1 > /workspace/a.txt"],
    });
    const res = await t.call("POST", `/api/v1/shells/${parent.id}/fork`, {
      count: 2,
      names: ["fork-left", "fork-right"],
    });
    expect(res.statusCode, res.body).toBe(201);
    const fork = res.json<ForkBody>();
    expect(fork.parent).toBe(parent.id);
    expect(fork.failed).toEqual([]);
    expect(fork.state.memory).toBe("not_copied");
    expect(fork.shells.map((s) => s.name)).toEqual(["fork-left", "fork-right"]);
    for (const child of fork.shells) {
      expect(child).toMatchObject({
        status: "running",
        language: "bash",
        network: "localhost",
        resources: parent.resources,
        envKeys: ["MODE"],
        secretEnvKeys: ["API_KEY"],
        ttlSeconds: 3600,
      });
      const read = await t.call("POST", `/api/v1/shells/${child.id}/exec`, {
        command: ["cat", "/workspace/a.txt"],
      });
      expect(read.json<{ stdout: string }>().stdout).toBe("v1\n");
    }
    // Independent afterwards: a write in one is not seen by the other or the parent.
    const [left, right] = fork.shells as [Shell, Shell];
    await t.call("POST", `/api/v1/shells/${left.id}/exec`, {
      command: ["sh", "-c", "echo left > /workspace/a.txt"],
    });
    for (const id of [right.id, parent.id]) {
      const read = await t.call("POST", `/api/v1/shells/${id}/exec`, {
        command: ["cat", "/workspace/a.txt"],
      });
      expect(read.json<{ stdout: string }>().stdout).toBe("v1\n");
    }
    const history = await t.call("GET", `/api/v1/activity?action=shell.&limit=500`);
    const events = history.json<{
      items: { action: string; target: { id: string } | null; details: Record<string, unknown> }[];
    }>().items;
    expect(
      events.find((e) => e.action === "shell.fork" && e.target?.id === parent.id),
    ).toMatchObject({
      details: { count: 2 },
    });
    for (const child of fork.shells)
      expect(
        events.find((e) => e.action === "shell.create" && e.target?.id === child.id)?.details,
      ).toMatchObject({ forkOf: parent.id });
  });

  it("goes through a create's admission: the org's limits refuse a fork of a shell above them", async () => {
    const parent = (
      await t.call("POST", "/api/v1/shells", { language: "bash", resources: { memoryMb: 512 } })
    ).json<Shell>();
    await t.call("PATCH", "/api/v1/org/policy", {
      maxResources: { cpu: 1, memoryMb: 256, pids: 64, diskMb: 4096 },
    });
    try {
      const res = await t.call("POST", `/api/v1/shells/${parent.id}/fork`, { count: 1 });
      expect(res.statusCode, res.body).toBe(422);
      expect(res.json<{ error: { code: string } }>().error.code).toBe("limit_exceeded");
    } finally {
      await t.call("PATCH", "/api/v1/org/policy", {
        maxResources: { cpu: 16, memoryMb: 65536, pids: 4096, diskMb: 102400 },
      });
    }
  });

  it("returns the shells it made with the refusal that stopped it", async () => {
    const parent = await shellIn("running");
    await t.call("POST", "/api/v1/shells", { language: "bash", name: "fork-taken" });
    const res = await t.call("POST", `/api/v1/shells/${parent.id}/fork`, {
      count: 3,
      names: ["fork-free", "fork-taken", "fork-later"],
    });
    expect(res.statusCode, res.body).toBe(201);
    const fork = res.json<ForkBody>();
    expect(fork.shells.map((s) => s.name)).toEqual(["fork-free"]);
    expect(fork.failed).toEqual([
      expect.objectContaining({ index: 1, name: "fork-taken", code: "name_taken" }),
    ]);
  });

  it("refuses bad counts and names, a deleted parent, and another org's shell as not found", async () => {
    const parent = await shellIn("running");
    for (const body of [
      { count: 0 },
      { count: 21 },
      { count: 2, names: ["only-one"] },
      { count: 2, names: ["same", "same"] },
      { count: 1, names: ["sh-0123456789"] },
    ]) {
      const res = await t.call("POST", `/api/v1/shells/${parent.id}/fork`, body);
      expect(res.statusCode, `${JSON.stringify(body)} ${res.body}`).toBe(400);
      expect(res.json<{ error: { code: string } }>().error.code).toBe("validation_failed");
    }
    const gone = await shellIn("deleted");
    const deleted = await t.call("POST", `/api/v1/shells/${gone.id}/fork`, { count: 1 });
    expect(deleted.statusCode, deleted.body).toBe(409);
    expect(deleted.json<{ error: { code: string } }>().error.code).toBe("invalid_state");
    const missing = await t.call("POST", `/api/v1/shells/sh-zzzzzzzzzz/fork`, { count: 1 });
    expect(missing.statusCode).toBe(404);
  });
});
