import ShellsClient, {
  type ActivityEvent,
  type Run,
  type RunFrame,
  type Scope,
  type Shell,
} from "@l1fe/shells";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { execFile, execFileSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { startTestServer, type TestServer } from "./harness.js";

// The seed-004 flow on real container shells: run({ code, language, egress }) → stream() →
// result() → audit() → teardown(), as the seed's quickstart writes it (run on the built SDK), with an
// allowlist whose refusals land in the audit, and the same egress shape through the MCP tools.

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const quickstart = join(repoRoot, "test/e2e/fixtures/seed-004-quickstart.mjs");
const METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";

/** Python that asks for the metadata service and an unlisted host, and reports the answers. */
const PROBE = `import urllib.error, urllib.request
answers = {}
for url in ["${METADATA_URL}", "http://example.org/"]:
    try:
        answers[url] = urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as e:
        answers[url] = e.code
print("answers:", answers)
shells.result(answers)
`;

interface EgressDetails {
  host: string;
  address: string | null;
  port: number;
  reason?: string;
}

function denials(audit: readonly ActivityEvent[]): EgressDetails[] {
  return audit
    .filter((e) => e.action === "egress.denied")
    .map((e) => e.details as unknown as EgressDetails);
}

describe.runIf(hostReport.available)("the seed-004 flow on container shells", () => {
  let server: TestServer;
  let shells: ShellsClient;

  beforeAll(async () => {
    // The quickstart runs as a user's script does: plain node over the compiled SDK.
    execFileSync(
      process.execPath,
      [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "packages/sdk"],
      { cwd: repoRoot, stdio: "inherit" },
    );
    server = await startTestServer({ backend: "container" });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("runs the quickstart as written: live frames, the structured result, the audit, teardown", async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [quickstart], {
      cwd: repoRoot,
      env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    });
    const lines = stdout.trim().split("\n");
    const frames = lines.slice(0, -1).map((line) => JSON.parse(line) as RunFrame);
    const { result, audit } = JSON.parse(lines.at(-1) as string) as {
      result: Run;
      audit: ActivityEvent[];
    };
    expect(frames.map((f) => [f.type, f.data])).toEqual([
      ["status", { status: "running", shellId: result.shellId }],
      ["stdout", "hi\n"],
      ["result", { ok: true }],
      ["exit", { exitCode: 0, killReason: null, status: "succeeded" }],
    ]);
    expect(result).toMatchObject({
      status: "succeeded",
      runtime: "container",
      exitCode: 0,
      result: { ok: true },
      output: { stdout: "hi\n", stderr: "", stdoutBytes: 3, stderrBytes: 0 },
    });
    // deny_all is the sealed network: no route at all, so no proxy and no decisions to make.
    expect(audit.map((e) => e.action)).toEqual([
      "shell.create",
      "run.start",
      "shell.exec",
      "shell.delete",
      "run.finish",
    ]);
    expect(audit[0]?.details).toMatchObject({ runtime: "container", network: "sealed" });
    const after = await shells.runs.handle(result.id).audit();
    expect(after.at(-1)).toMatchObject({ action: "run.teardown", target: { id: result.id } });
    expect((await shells.get(result.shellId)).status).toBe("deleted");
  });

  it("records every refusal of an allowlisted run in its audit, complete once result() answers", async () => {
    const session = await shells.run({
      code: PROBE,
      language: "python",
      egress: { mode: "allowlist", allow: ["pypi.org"] },
    });
    const stdout: string[] = [];
    for await (const frame of session.stream())
      if (frame.type === "stdout") stdout.push(frame.data as string);
    const run = await session.result();
    expect(run.result).toEqual({ [METADATA_URL]: 403, "http://example.org/": 403 });
    expect(run.output?.stdout).toBe(stdout.join(""));
    expect(run.output?.stdout).toContain("answers: {");
    const audit = await session.audit();
    expect(audit.find((e) => e.action === "shell.create")?.details).toMatchObject({
      network: "internet",
    });
    expect(denials(audit)).toEqual(
      expect.arrayContaining([
        // Both refused on the allowlist itself, before any address was dialled or looked up.
        expect.objectContaining({
          host: "169.254.169.254",
          address: null,
          port: 80,
          reason: "not_in_shell_allowlist",
        }),
        expect.objectContaining({
          host: "example.org",
          address: null,
          reason: "not_in_shell_allowlist",
        }),
      ]),
    );
    expect(audit.some((e) => e.action === "egress.allowed")).toBe(false);
    expect(audit.map((e) => e.action).slice(-2)).toEqual(["shell.delete", "run.finish"]);
    await session.teardown();
  });

  describe("through the MCP tools", () => {
    let client: Client;

    beforeAll(async () => {
      const agent = await shells.agents.create({ name: "seed-004-agent" });
      const scopes: Scope[] = [
        "shells:agent:invoke",
        "shells:instances:read",
        "shells:instances:create",
        "shells:instances:control",
      ];
      const { token } = await shells.keys.create({
        name: "mcp",
        scopes,
        principal: { type: "agent", id: agent.id },
      });
      await shells.entitlements.grant({
        entitlement: "shells.agent.invoke",
        principal: { type: "agent", id: agent.id },
      });
      client = new Client({ name: "seed-004-e2e", version: "0.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${token}` } },
        }),
      );
    });
    afterAll(async () => {
      await client?.close();
    });

    const call = async (name: string, args: Record<string, unknown>) => {
      const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
      const text = result.content.map((part) => (part.type === "text" ? part.text : "")).join("");
      expect(result.isError ?? false, text).toBe(false);
      return { structured: result.structuredContent, text };
    };

    it("shells_run takes the allowlist and answers the end of the run's output", async () => {
      const { structured, text } = await call("shells_run", {
        language: "python",
        code: PROBE,
        egress: { mode: "allowlist", allow: ["pypi.org"] },
      });
      const run = structured as unknown as Run;
      expect(run).toMatchObject({ status: "succeeded", runtime: "container" });
      expect(text).toContain("stdout:\nanswers: {");
      expect(text).toContain("403");
      const audit = await shells.runs.handle(run.id).audit();
      expect(denials(audit).map((d) => d.host)).toEqual(
        expect.arrayContaining(["169.254.169.254", "example.org"]),
      );
    });

    it("shells_create takes the allowlist: the shell is internet, narrowed to it", async () => {
      const { structured, text } = await call("shells_create", {
        language: "python",
        egress: { mode: "allowlist", allow: ["pypi.org", "*.pythonhosted.org"] },
      });
      const shell = structured as unknown as Shell;
      expect(shell).toMatchObject({
        network: "internet",
        egress: { mode: "allowlist", allow: ["pypi.org", "*.pythonhosted.org"] },
      });
      expect(text).toContain("egress allowed to pypi.org, *.pythonhosted.org");
      const { structured: exec } = await call("shells_exec", {
        shell: shell.id,
        command: [
          "python3",
          "-c",
          "import urllib.request, urllib.error\ntry:\n    urllib.request.urlopen('http://example.org/', timeout=10)\nexcept urllib.error.HTTPError as e:\n    print(e.code)",
        ],
      });
      expect(exec).toMatchObject({ exitCode: 0, stdout: "403\n" });
      await call("shells_action", { shell: shell.id, capability: "delete" });
    });
  });
});
