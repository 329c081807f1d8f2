import type {
  ApiKeyCreate,
  ApiKeyCreated,
  ExecRequest,
  ExecResult,
  OrgPolicy,
  OrgPolicyUpdate,
  PendingApproval,
  Shell,
} from "@l1fe/shells";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo } from "./context.js";
import { runCli } from "./program.js";

const shell: Shell = {
  id: "sh-1",
  name: "demo",
  project: "default",
  status: "running",
  statusReason: null,
  language: "bash",
  runtime: "container",
  network: "sealed",
  region: "local",
  resources: { cpu: 1, memoryMb: 512, pids: 256, diskMb: 1024 },
  envKeys: [],
  secretEnvKeys: [],
  backend: "simulator",
  imageVersion: null,
  isolation: null,
  ttlSeconds: null,
  expiresAt: null,
  createdAt: "2025-06-01T11:55:00.000Z",
  updatedAt: "2025-06-01T11:55:00.000Z",
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

const pending: PendingApproval = {
  status: "pending_approval",
  message: "wipe_state on demo waits for an approver (approval apr-1).",
  approval: {
    id: "apr-1",
    shellId: "sh-1",
    action: "wipe_state",
    state: "pending",
    requestedBy: { type: "user", id: "usr-dev" },
    decidedBy: null,
    reason: null,
    outcome: null,
    createdAt: "2025-06-01T12:00:00.000Z",
    expiresAt: "2025-06-02T12:00:00.000Z",
    decidedAt: null,
  },
};

const createdKey: ApiKeyCreated = {
  key: {
    id: "key-1",
    name: "ci",
    principal: { type: "agent", id: "agt-1" },
    scopes: ["shells:agent:invoke"],
    createdBy: { type: "user", id: "usr-1" },
    createdAt: "2025-06-01T12:00:00.000Z",
    lastUsedAt: null,
    revokedAt: null,
    expiresAt: null,
  },
  token: "shk_secret",
};

const policy: OrgPolicy = {
  isolationFloor: "wasm",
  allowedRegions: [],
  termCredentialTtlSeconds: 300,
  defaultNetwork: "sealed",
  approvalGates: {
    stop: "none",
    wipe_state: "none",
    reinstall_os: "none",
    delete: "none",
    restore: "none",
    restart: "none",
    egress_change: "none",
    binding_attach: "none",
    project_egress_change: "none",
  },
  approvers: [],
  approvalTtlSeconds: 86_400,
  maxResources: { cpu: 16, memoryMb: 65_536, pids: 4096, diskMb: 102_400 },
  snapshotQuota: { countPerShell: 10, mbPerShell: 10_240, mbPerOrg: 51_200 },
};

/** The body of the last `PATCH /org/policy` the stand-in API received. */
let lastPolicyUpdate: OrgPolicyUpdate | undefined;
let lastKeyCreate: ApiKeyCreate | undefined;

/** An in-process stand-in for the API: answers the routes these tests use, and echoes exec's input. */
const fakeApi: typeof fetch = async (input, init) => {
  const request = new Request(input, init);
  const url = new URL(request.url);
  if (request.headers.get("authorization") !== "Bearer good") {
    return json({ error: { code: "unauthenticated", message: "bad key", requestId: "r" } }, 401);
  }
  if (request.method === "GET" && url.pathname === "/api/v1/shells")
    return json({ items: [shell], nextCursor: null });
  if (request.method === "POST" && url.pathname === "/api/v1/shells/sh-1/exec") {
    const body = (await request.json()) as ExecRequest;
    const script = body.command.join(" ");
    const result: ExecResult = {
      exitCode: Number(/exit (\d+)/.exec(script)?.[1] ?? 0),
      stdout: body.stdin ?? `ran: ${script}\n`,
      stderr: "to stderr\n",
      durationMs: 1,
      ...(script.includes("fork") ? { killReason: "pids" as const } : {}),
    };
    return json(result);
  }
  if (request.method === "POST" && url.pathname === "/api/v1/shells/sh-1/actions/wipe_state")
    return json(pending, 202);
  if (request.method === "DELETE" && url.pathname === "/api/v1/shells/sh-1")
    return json({ ...pending, approval: { ...pending.approval, action: "delete" } }, 202);
  if (request.method === "POST" && url.pathname === "/api/v1/keys") {
    lastKeyCreate = (await request.json()) as ApiKeyCreate;
    const expiresAt = lastKeyCreate.expiresAt ?? null;
    return json({ ...createdKey, key: { ...createdKey.key, expiresAt } }, 201);
  }
  if (request.method === "PATCH" && url.pathname === "/api/v1/org/policy") {
    lastPolicyUpdate = (await request.json()) as OrgPolicyUpdate;
    return json({ ...policy, ...lastPolicyUpdate });
  }
  return json({ error: { code: "shell_not_found", message: "No shell.", requestId: "r" } }, 404);
};

async function cli(args: string[], options: { stdin?: string; token?: string } = {}) {
  let stdout = "";
  let stderr = "";
  const stdin = Object.assign(
    Readable.from(options.stdin === undefined ? [] : [Buffer.from(options.stdin)]),
    {
      isTTY: options.stdin === undefined,
    },
  );
  const io: CliIo = {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin,
    env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: options.token ?? "good" },
    cwd: "/nonexistent",
    fetch: fakeApi,
    now: () => Date.parse("2025-06-01T12:00:00Z"),
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

describe("shells exec", () => {
  it("prints the command's output to the matching streams and exits with its exit code", async () => {
    const run = await cli(["exec", "sh-1", "--", "sh", "-c", "exit 3"]);
    expect(run).toEqual({ exitCode: 3, stdout: "ran: sh -c exit 3\n", stderr: "to stderr\n" });
  });

  it("forwards piped standard input", async () => {
    const run = await cli(["exec", "sh-1", "--", "cat"], { stdin: "piped\n" });
    expect(run.stdout).toBe("piped\n");
  });

  it("does not forward standard input with --no-stdin", async () => {
    const run = await cli(["exec", "--no-stdin", "sh-1", "--", "cat"], { stdin: "piped\n" });
    expect(run.stdout).toBe("ran: cat\n");
  });

  it("says why the sandbox killed the command", async () => {
    const run = await cli(["exec", "sh-1", "--", "fork", "exit 137"]);
    expect(run.exitCode).toBe(137);
    expect(run.stderr).toContain("killed the command: pids");
  });

  it("prints the raw result with --json and still exits with the command's code", async () => {
    const run = await cli(["exec", "sh-1", "--json", "--", "sh", "-c", "exit 4"]);
    expect(run.exitCode).toBe(4);
    expect(JSON.parse(run.stdout)).toMatchObject({ exitCode: 4, stdout: "ran: sh -c exit 4\n" });
  });
});

describe("shells ls", () => {
  it("prints a table with human ages", async () => {
    const run = await cli(["ls"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout.split("\n")[0]).toMatch(
      /^ID\s+NAME\s+STATUS\s+LANGUAGE\s+RUNTIME\s+NETWORK\s+AGE$/,
    );
    expect(run.stdout).toMatch(/sh-1\s+demo\s+running\s+bash\s+container\s+sealed\s+5m/);
  });

  it("prints raw JSON with --json before or after the command", async () => {
    for (const args of [
      ["--json", "ls"],
      ["ls", "--json"],
    ]) {
      const run = await cli(args);
      expect(JSON.parse(run.stdout)).toEqual([shell]);
    }
  });
});

describe("a gated action parked for an approver", () => {
  it("prints the pending approval and the command an approver runs, and exits 0", async () => {
    const run = await cli(["action", "sh-1", "wipe_state"]);
    expect(run).toMatchObject({ exitCode: 0, stderr: "" });
    expect(run.stdout).toContain("pending approval: wipe_state on demo waits for an approver");
    expect(run.stdout).toMatch(/^expires\s+2025-06-02T12:00:00.000Z \(in 24h\)$/m);
    expect(run.stdout).toContain("ask an approver: shells approvals grant apr-1 --reason");
  });

  it("prints a parked rm the same way", async () => {
    const run = await cli(["rm", "sh-1", "--confirm"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(/^action\s+delete$/m);
  });

  it("prints the raw pending approval with --json", async () => {
    const run = await cli(["action", "sh-1", "wipe_state", "--json"]);
    expect(JSON.parse(run.stdout)).toEqual(pending);
  });
});

describe("shells keys create", () => {
  it("prints the token on a line of its own, with a warning that it is shown once", async () => {
    const run = await cli([
      "keys",
      "create",
      "--name",
      "ci",
      "--scope",
      "shells:agent:invoke",
      "--agent",
      "agt-1",
    ]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(/^token: shk_secret$/m);
    expect(run.stdout).toMatch(/^for\s+agent:agt-1$/m);
    expect(run.stdout).toContain("warning: this token is shown once and never again");
    expect(run.stdout).toMatch(/^expires\s+never \(until revoked\)$/m);
  });

  it("asks for a key that expires after --expires-in-days and says when", async () => {
    const run = await cli([
      "keys",
      "create",
      "--name",
      "ci",
      "--scope",
      "shells:instances:read",
      "--expires-in-days",
      "30",
    ]);
    expect(run.exitCode).toBe(0);
    expect(lastKeyCreate?.expiresAt).toBe("2025-07-01T12:00:00.000Z");
    expect(run.stdout).toMatch(/^expires\s+2025-07-01T12:00:00.000Z$/m);
  });

  it("prints key and token as JSON with --json", async () => {
    const run = await cli([
      "keys",
      "create",
      "--name",
      "ci",
      "--scope",
      "shells:agent:invoke",
      "--json",
    ]);
    expect(JSON.parse(run.stdout)).toEqual(createdKey);
  });
});

describe("shells policy set", () => {
  it("sends the ranges webhook endpoints may be at", async () => {
    const run = await cli(["policy", "set", "--webhook-allow-cidrs", "127.0.0.1/32,10.0.0.0/8"]);
    expect(run.exitCode).toBe(0);
    expect(lastPolicyUpdate).toEqual({
      webhooks: { allowCidrs: ["127.0.0.1/32", "10.0.0.0/8"] },
    });
    expect(run.stdout).toMatch(/^webhook private ranges\s+127\.0\.0\.1\/32, 10\.0\.0\.0\/8$/m);
  });

  it("sends only the fields given, each gate on its own", async () => {
    const run = await cli([
      "policy",
      "set",
      "--gate",
      "wipe_state=approvers",
      "--gate",
      "delete=confirm",
      "--approvers",
      "usr-1,usr-2",
      "--approval-ttl",
      "2h",
    ]);
    expect(run.exitCode).toBe(0);
    expect(lastPolicyUpdate).toEqual({
      approvalGates: { wipe_state: "approvers", delete: "confirm" },
      approvers: ["usr-1", "usr-2"],
      approvalTtlSeconds: 7200,
    });
    expect(run.stdout).toMatch(/^gate wipe_state\s+approvers$/m);
    expect(run.stdout).toMatch(/^approvers\s+usr-1, usr-2$/m);
  });
});

describe("errors", () => {
  it("prints error: <code>: <message> with a hint and exits 1", async () => {
    const run = await cli(["get", "nope"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toBe(
      "error: shell_not_found: No shell.\nhint: list your shells with `shells ls`\n",
    );
  });

  it("says how to fix a refused token", async () => {
    const run = await cli(["ls"], { token: "bad" });
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/^error: unauthenticated: bad key\nhint: .*SHELLS_API_TOKEN/);
  });

  it.each([
    [["frobnicate"]],
    [["action", "sh-1", "explode"]],
    [["create", "--language", "cobol"]],
    [["create", "--memory", "lots"]],
    [["exec", "sh-1", "--timeout", "soon", "--", "true"]],
    [["get"]],
  ])("exits 2 on the usage error in %j", async (args) => {
    const run = await cli(args);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toMatch(/^error: usage: /);
  });

  it("exits 0 for --help", async () => {
    const run = await cli(["--help"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toContain("audit");
  });
});

describe("shells exec, streamed from a server that streams", () => {
  const streamingApi: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    if (request.headers.get("accept") !== "text/event-stream") return fakeApi(input, init);
    const frames = [
      'event: stdout\ndata: {"type":"stdout","data":"live\\n","time":1}\n\n',
      'event: stderr\ndata: {"type":"stderr","data":"warn\\n","time":2}\n\n',
      'event: exit\ndata: {"type":"exit","result":{"exitCode":7,"stdout":"","stderr":"","durationMs":3,"killReason":"wall_clock"},"time":3}\n\n',
    ];
    return new Response(frames.join(""), { headers: { "content-type": "text/event-stream" } });
  };

  async function streamedCli(args: string[]) {
    let stdout = "";
    let stderr = "";
    const io: CliIo = {
      stdout: { write: (text: string | Uint8Array) => (stdout += String(text)) },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: Object.assign(Readable.from([]), { isTTY: true }),
      env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
      cwd: "/nonexistent",
      fetch: streamingApi,
    };
    const exitCode = await runCli(args, io);
    return { exitCode, stdout, stderr };
  }

  it("prints each frame to its stream, says why the sandbox ended it, and exits with its code", async () => {
    const run = await streamedCli(["exec", "sh-1", "--", "sh", "-c", "slow"]);
    expect(run.exitCode).toBe(7);
    expect(run.stdout).toBe("live\n");
    expect(run.stderr).toBe(
      "warn\nshells: the sandbox killed the command: wall_clock (exit code 7)\n",
    );
  });

  it("makes the buffered call with --no-stream", async () => {
    const run = await streamedCli(["exec", "--no-stream", "sh-1", "--", "sh", "-c", "exit 2"]);
    expect(run).toMatchObject({ exitCode: 2, stdout: "ran: sh -c exit 2\n" });
  });
});
