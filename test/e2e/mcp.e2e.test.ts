import ShellsClient, { type ActivityEvent, type Run, type Scope, type Shell } from "@l1fe/shells";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { openSqliteStore } from "@shells/server";
import { execFileSync } from "node:child_process";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addPrincipal } from "../../apps/server/src/test-support/test-app.js";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** The `shells-mcp` executable as npm links it (a launcher over apps/mcp/dist/bin.js). */
const mcpBin = join(repoRoot, "apps/mcp/bin/shells-mcp.js");

const AGENT_SCOPES: Scope[] = [
  "shells:agent:invoke",
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
];
const TOOLS = [
  "shells_action",
  "shells_create",
  "shells_exec",
  "shells_files",
  "shells_fork",
  "shells_interpreter",
  "shells_list",
  "shells_run",
  "shells_term",
];

let server: TestServer;
let owner: ShellsClient;
/** An agent key whose agent holds the `shells.agent.invoke` entitlement. */
let agentToken: string;
/** An agent key with every scope, whose agent was never granted the entitlement. */
let unentitledAgentId: string;
let unentitledToken: string;
/** A shell of another org, in the same store. */
let foreignShellId: string;
const clients: Client[] = [];

beforeAll(async () => {
  // The stdio server runs as users run it: the compiled binary over the compiled packages.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/mcp"],
    { cwd: repoRoot, stdio: "inherit" },
  );
  server = await startTestServer();
  owner = new ShellsClient({ baseUrl: server.url, token: server.token });

  const agent = await owner.agents.create({ name: "mcp-agent" });
  agentToken = (
    await owner.keys.create({
      name: "mcp",
      scopes: AGENT_SCOPES,
      principal: { type: "agent", id: agent.id },
    })
  ).token;
  await owner.entitlements.grant({
    entitlement: "shells.agent.invoke",
    principal: { type: "agent", id: agent.id },
  });

  const unentitled = await owner.agents.create({ name: "unentitled-agent" });
  unentitledAgentId = unentitled.id;
  unentitledToken = (
    await owner.keys.create({
      name: "mcp",
      scopes: AGENT_SCOPES,
      principal: { type: "agent", id: unentitled.id },
    })
  ).token;

  // A second org in the same store, with a shell of its own.
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  try {
    const other = await addPrincipal(store, {
      orgId: "org-other",
      role: "owner",
      scopes: AGENT_SCOPES,
    });
    const otherOrg = new ShellsClient({ baseUrl: server.url, token: other.token });
    foreignShellId = (await otherOrg.create({ language: "go", name: "foreign" })).id;
  } finally {
    await store.close();
  }
});

afterAll(async () => {
  for (const client of clients) await client.close();
  await server?.close();
});

/** An MCP client over stdio: the built `shells-mcp` binary, holding `token`. */
async function overStdio(token: string): Promise<Client> {
  const client = new Client({ name: "shells-e2e", version: "0.0.0" });
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [mcpBin],
      env: { PATH: process.env["PATH"] ?? "", SHELLS_URL: server.url, SHELLS_API_TOKEN: token },
      stderr: "ignore",
    }),
  );
  clients.push(client);
  return client;
}

/** An MCP client over streamable HTTP to the control plane's `/mcp`, holding `token`. */
async function overHttp(token: string): Promise<Client> {
  const client = new Client({ name: "shells-e2e", version: "0.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    }),
  );
  clients.push(client);
  return client;
}

/** Calls a tool and returns its result, typed as a tool result. */
async function call(
  client: Client,
  name: string,
  args: Record<string, unknown>,
): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

function textOf(result: CallToolResult): string {
  return result.content.map((part) => (part.type === "text" ? part.text : "")).join("\n");
}

/** The structured result of a successful call (fails the test on a tool error). */
function structured<T>(result: CallToolResult): T {
  expect(result.isError ?? false, textOf(result)).toBe(false);
  return result.structuredContent as T;
}

/** The stable code of a tool error. */
function errorCode(result: CallToolResult): string | undefined {
  expect(result.isError).toBe(true);
  return (result.structuredContent as { error?: { code?: string } }).error?.code;
}

describe.each([
  ["stdio", overStdio],
  ["streamable HTTP", overHttp],
] as const)("an agent over %s", (_transport, connect) => {
  let client: Client;
  let shell: Shell;

  beforeAll(async () => {
    client = await connect(agentToken);
  });

  it("lists the tools with descriptions and input schemas", async () => {
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(TOOLS);
    for (const tool of tools) {
      expect(tool.description?.length).toBeGreaterThan(200);
      expect(tool.inputSchema.type).toBe("object");
    }
    const create = tools.find((t) => t.name === "shells_create");
    // A template can give the language, so nothing is required by the schema itself.
    expect(create?.inputSchema.required ?? []).toEqual([]);
    expect(create?.inputSchema.properties?.["template"]).toMatchObject({ type: "string" });
    expect(create?.inputSchema.properties?.["network"]).toMatchObject({
      enum: ["sealed", "localhost", "internet"],
    });
    expect(tools.find((t) => t.name === "shells_action")?.annotations?.destructiveHint).toBe(true);
  });

  it("creates a sealed go shell", async () => {
    const result = await call(client, "shells_create", {
      language: "go",
      runtime: "container",
      network: "sealed",
    });
    shell = structured<Shell>(result);
    expect(shell).toMatchObject({
      language: "go",
      runtime: "container",
      network: "sealed",
      status: "running",
    });
    expect(textOf(result)).toContain(`${shell.id} is running`);
  });

  it("wipes the filesystem state and leaves the sandbox intact", async () => {
    const write = await call(client, "shells_exec", {
      shell: shell.id,
      command: [
        "sh",
        "-c",
        "echo kept-until-wiped > /workspace/note.txt && cat /workspace/note.txt",
      ],
    });
    expect(structured(write)).toMatchObject({ exitCode: 0, stdout: "kept-until-wiped\n" });

    const wipe = await call(client, "shells_action", {
      shell: shell.id,
      capability: "wipe_state",
    });
    expect(structured(wipe)).toMatchObject({
      capability: "wipe_state",
      message: "filesystem state destroyed, sandbox intact",
      shell: { id: shell.id, status: "running" },
    });
    expect(textOf(wipe)).toContain("filesystem state destroyed, sandbox intact");

    const gone = await call(client, "shells_exec", {
      shell: shell.id,
      command: ["test", "-e", "/workspace/note.txt"],
    });
    expect(structured(gone)).toMatchObject({ exitCode: 1 });
    const alive = await call(client, "shells_exec", {
      shell: shell.id,
      command: ["echo", "still here"],
    });
    expect(structured(alive)).toMatchObject({ exitCode: 0, stdout: "still here\n" });
  });

  it("mints a term credential that attaches once and is recorded without its material", async () => {
    const result = await call(client, "shells_term", { shell: shell.id });
    const credential = structured<{ id: string; token: string; url: string; expiresAt: string }>(
      result,
    );
    expect(credential.token).toMatch(/^sht_/);
    expect(credential.url).toMatch(/^ws:\/\/.*\/api\/v1\/term\/attach$/);
    expect(Date.parse(credential.expiresAt)).toBeGreaterThan(Date.now());
    const mints: ActivityEvent[] = [];
    for await (const event of owner.activity({ action: "shell.term.mint" })) mints.push(event);
    const mint = mints.find((e) => e.details["credentialId"] === credential.id);
    expect(mint).toBeDefined();
    expect(JSON.stringify(mints)).not.toContain(credential.token);
  });

  it("reads and writes files and runs one-shot code through the gate", async () => {
    await call(client, "shells_files", {
      shell: shell.id,
      op: "write",
      path: "notes/a.txt",
      content: "alpha",
    });
    const read = structured<{ content: string; encoding: string }>(
      await call(client, "shells_files", {
        shell: shell.id,
        op: "read",
        path: "/workspace/notes/a.txt",
      }),
    );
    expect(read).toMatchObject({ content: "alpha", encoding: "utf8" });
    const listed = structured<{ items: { path: string }[] }>(
      await call(client, "shells_files", { shell: shell.id, op: "list", path: "notes" }),
    );
    expect(listed.items.map((i) => i.path)).toEqual(["/workspace/notes/a.txt"]);
    const run = structured<{ status: string; result: unknown }>(
      await call(client, "shells_run", {
        language: "bash",
        command: ["sh", "-c", `echo '{"ok":true}' > "$SHELLS_RESULT"`],
      }),
    );
    expect(run).toMatchObject({ status: "succeeded", result: { ok: true } });
  });

  it("runs code once and reads the end of its output when it reported no result", async () => {
    const result = await call(client, "shells_run", {
      language: "bash",
      command: ["sh", "-c", "echo step one; echo 'no such table: rows' >&2; exit 4"],
      egress: { mode: "deny_all", allow: [] },
    });
    const run = structured<Run>(result);
    expect(run).toMatchObject({
      status: "failed",
      exitCode: 4,
      result: null,
      output: {
        stdout: "step one\n",
        stderr: "no such table: rows\n",
        stdoutBytes: 9,
        stderrBytes: 20,
      },
    });
    expect(textOf(result)).toContain("No structured result was reported.");
    expect(textOf(result)).toContain("stdout:\nstep one\n");
    expect(textOf(result)).toContain("stderr:\nno such table: rows\n");
  });

  it("passes the seed-004 egress shape through shells_create and shells_run", async () => {
    const sealed = structured<Shell>(
      await call(client, "shells_create", {
        language: "bash",
        egress: { mode: "deny_all", allow: [] },
      }),
    );
    expect(sealed).toMatchObject({ network: "sealed", status: "running" });
    expect(sealed.egress).toBeUndefined();
    await call(client, "shells_action", { shell: sealed.id, capability: "delete" });
    // An allowlist means internet through the egress proxy, which the simulator does not offer:
    // refused as such, never quietly run sealed.
    for (const tool of ["shells_create", "shells_run"]) {
      const refused = await call(client, tool, {
        language: "bash",
        ...(tool === "shells_run" ? { command: ["true"] } : {}),
        egress: { mode: "allowlist", allow: ["pypi.org"] },
      });
      expect(errorCode(refused), tool).toBe("network_mode_unavailable");
      expect(textOf(refused)).toContain("internet");
      const malformed = await call(client, tool, {
        language: "bash",
        ...(tool === "shells_run" ? { command: ["true"] } : {}),
        egress: { mode: "open", allow: [] },
      });
      expect(errorCode(malformed), tool).toBe("validation_failed");
      expect(textOf(malformed)).toMatch(/arguments\.egress\.mode/);
    }
  });

  it("forks a shell through the gate: new shells with the parent's files", async () => {
    await call(client, "shells_files", {
      shell: shell.id,
      op: "write",
      path: "fork/seed.txt",
      content: "from the parent",
    });
    const result = await call(client, "shells_fork", { shell: shell.id, count: 2 });
    const fork = structured<{ parent: string; shells: Shell[]; state: { memory: string } }>(result);
    expect(fork.parent).toBe(shell.id);
    expect(fork.shells).toHaveLength(2);
    expect(fork.state.memory).toBe("not_copied");
    const read = structured<{ content: string }>(
      await call(client, "shells_files", {
        shell: fork.shells[1]!.id,
        op: "read",
        path: "fork/seed.txt",
      }),
    );
    expect(read.content).toBe("from the parent");
  });

  it("lists its own org's shells and never another org's", async () => {
    const result = await call(client, "shells_list", { limit: 200 });
    const ids = structured<{ items: Shell[] }>(result).items.map((s) => s.id);
    expect(ids).toContain(shell.id);
    expect(ids).not.toContain(foreignShellId);
    expect(textOf(result)).not.toContain(foreignShellId);
  });

  it("cannot reach another org's shell by id", async () => {
    const result = await call(client, "shells_action", {
      shell: foreignShellId,
      capability: "logs",
    });
    expect(errorCode(result)).toBe("shell_not_found");
  });

  it("gets refused arguments back as a tool error it can act on", async () => {
    const result = await call(client, "shells_create", { language: "cobol" });
    expect(errorCode(result)).toBe("validation_failed");
    expect(textOf(result)).toMatch(/arguments\.language/);
    expect(textOf(result)).toMatch(/Next step: fix the arguments/);
  });

  it("sees a long output cut with a marker and the total size", async () => {
    const result = await call(client, "shells_exec", {
      shell: shell.id,
      command: ["printf", "%s", "x".repeat(50_000)],
    });
    const exec = structured<{ stdout: string; truncated?: boolean }>(result);
    expect(exec.stdout.length).toBeLessThan(9000);
    expect(exec.stdout).toContain("of 50,000 bytes cut");
    expect(exec.truncated).toBe(true);
  });

  it("asks for typed confirmation where the org gates an action", async () => {
    await owner.policy.update({ approvalGates: { delete: "confirm" } });
    try {
      const refused = await call(client, "shells_action", {
        shell: shell.id,
        capability: "delete",
      });
      expect(errorCode(refused)).toBe("confirmation_required");
      expect(textOf(refused)).toContain("`confirm`");
      const deleted = await call(client, "shells_action", {
        shell: shell.id,
        capability: "delete",
        confirm: shell.name,
      });
      expect(structured(deleted)).toMatchObject({ id: shell.id, status: "deleted" });
    } finally {
      await owner.policy.update({ approvalGates: { delete: "none" } });
    }
  });

  it("gets entitlement_required for every tool without the entitlement, each denial recorded", async () => {
    const unentitled = await connect(unentitledToken);
    const args: Record<string, Record<string, unknown>> = {
      shells_list: {},
      shells_create: { language: "go" },
      shells_exec: { shell: shell.id, command: ["true"] },
      shells_action: { shell: shell.id, capability: "logs" },
      shells_term: { shell: shell.id },
      shells_interpreter: { shell: shell.id, code: "1" },
      shells_run: { language: "bash", command: ["true"] },
      shells_files: { shell: shell.id, op: "list", path: "/workspace" },
    };
    const since = new Date().toISOString();
    for (const tool of TOOLS) {
      const result = await call(unentitled, tool, args[tool] ?? {});
      expect(errorCode(result)).toBe("entitlement_required");
      expect(textOf(result)).toContain("ask an org admin to grant shells.agent.invoke");
      expect(textOf(result)).not.toMatch(/\bat .*\.(js|ts):\d+/);
    }
    const denials: ActivityEvent[] = [];
    for await (const event of owner.activity({
      action: "agent.invoke",
      actor: unentitledAgentId,
    })) {
      if (event.time >= since) denials.push(event);
      else break;
    }
    expect(denials.map((e) => e.outcome)).toEqual(TOOLS.map(() => "denied"));
    expect(denials.map((e) => e.details["tool"]).sort()).toEqual(TOOLS);
  });
});

describe("a user key at the gate", () => {
  it("is refused until the org grants that user the entitlement", async () => {
    const client = await overHttp(server.token);
    const refused = await call(client, "shells_list", {});
    expect(errorCode(refused)).toBe("entitlement_required");

    const me = await owner.whoami();
    const grant = await owner.entitlements.grant({
      entitlement: "shells.agent.invoke",
      principal: { type: "user", id: me.actor.id },
    });
    try {
      const allowed = await call(client, "shells_list", {});
      expect(structured<{ items: Shell[] }>(allowed).items).toEqual(expect.any(Array));
    } finally {
      await owner.entitlements.revoke(grant.id);
    }
  });
});

describe("the /mcp endpoint", () => {
  const initialize = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "raw", version: "0" },
    },
  });

  /** POSTs an initialize request to /mcp with `headers` (Host included) over a raw socket. */
  function post(headers: Record<string, string>): Promise<{ status: number; body: string }> {
    const url = new URL(`${server.url}/mcp`);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          hostname: url.hostname,
          port: url.port,
          path: url.pathname,
          method: "POST",
          headers: {
            host: url.host,
            authorization: `Bearer ${agentToken}`,
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            ...headers,
          },
        },
        (res) => {
          let body = "";
          res.on("data", (chunk: Buffer) => (body += chunk.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end(initialize);
    });
  }

  it("answers its own origin and non-browser clients", async () => {
    expect((await post({})).status).toBe(200);
    expect((await post({ origin: server.url })).status).toBe(200);
  });

  it("refuses a foreign Origin", async () => {
    const response = await post({ origin: "http://evil.example" });
    expect(response.status).toBe(403);
    expect(JSON.parse(response.body)).toMatchObject({
      error: { code: "forbidden", requestId: expect.any(String) },
    });
  });

  it("refuses a foreign Host (DNS rebinding)", async () => {
    const port = new URL(server.url).port;
    const response = await post({
      host: `evil.example:${port}`,
      origin: `http://evil.example:${port}`,
    });
    expect(response.status).toBe(403);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: "forbidden" } });
    expect((await post({ host: `evil.example:${port}` })).status).toBe(403);
  });

  it("is stateless: no server-to-client stream and no session to end", async () => {
    for (const method of ["GET", "DELETE"]) {
      const response = await fetch(`${server.url}/mcp`, {
        method,
        headers: { authorization: `Bearer ${agentToken}`, accept: "text/event-stream" },
      });
      expect(response.status).toBe(405);
      expect(response.headers.get("allow")).toBe("POST");
    }
  });

  it("refuses a request without credentials", async () => {
    const response = await post({ authorization: "" });
    expect(response.status).toBe(401);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: "unauthenticated" } });
  });
});
