import {
  AgentTool,
  type ActionResult,
  type PendingApproval,
  type Run,
  type Shell,
} from "@shells/contract";
import { describe, expect, it } from "vitest";
import { OUTPUT_LIMIT_CHARS } from "./bound-output.js";
import { renderToolResult, toolDefinitions } from "./tool-table.js";

const shell: Shell = {
  id: "sh-1",
  name: "scratch",
  project: "default",
  status: "running",
  statusReason: null,
  language: "go",
  runtime: "microvm",
  network: "sealed",
  region: "local",
  resources: { cpu: 1, memoryMb: 512, pids: 256, diskMb: 1024 },
  envKeys: [],
  secretEnvKeys: [],
  backend: "microvm",
  imageVersion: null,
  isolation: "microvm (emulated)",
  ttlSeconds: null,
  expiresAt: null,
  createdAt: "2026-01-01T00:00:00.000Z",
  updatedAt: "2026-01-01T00:00:00.000Z",
};

describe("the tool definitions", () => {
  const definitions = toolDefinitions();

  it("cover every tool of the agent gate, each described for a model", () => {
    expect(definitions.map((d) => d.name)).toEqual(AgentTool.options);
    for (const definition of definitions) {
      expect(definition.description?.length).toBeGreaterThan(200);
      expect(definition.title).toEqual(expect.any(String));
    }
  });

  it("take their input schemas from the contract, with a sentence per argument", () => {
    const exec = definitions.find((d) => d.name === "shells_exec");
    expect(exec?.inputSchema).toMatchObject({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      required: ["command", "shell"],
      additionalProperties: false,
      properties: {
        timeoutMs: { type: "integer", maximum: 3_600_000, description: expect.any(String) },
      },
    });
    for (const definition of definitions) {
      for (const property of Object.values(definition.inputSchema.properties ?? {})) {
        expect(property).toHaveProperty("description");
      }
    }
  });

  it("let shells_create and shells_run grant service bindings by name", () => {
    for (const name of ["shells_create", "shells_run"]) {
      const bindings = definitions.find((d) => d.name === name)?.inputSchema.properties?.bindings;
      expect(bindings, name).toMatchObject({
        type: "array",
        items: { type: "string" },
        description: expect.stringContaining("SHELLS_BINDING_<NAME>_URL"),
      });
    }
  });

  it("let shells_run take a git source, cloned by the server", () => {
    const git = definitions.find((d) => d.name === "shells_run")?.inputSchema.properties?.git;
    expect(git).toMatchObject({
      type: "object",
      required: ["repo", "ref"],
      description: expect.stringContaining("never enters the sandbox"),
    });
    expect(Object.keys((git as { properties: object }).properties).sort()).toEqual([
      "binding",
      "entrypoint",
      "ref",
      "repo",
      "subpath",
    ]);
  });

  it("mark what is read-only and what is destructive", () => {
    const hints = Object.fromEntries(definitions.map((d) => [d.name, d.annotations]));
    expect(hints["shells_list"]?.readOnlyHint).toBe(true);
    expect(hints["shells_create"]?.destructiveHint).toBe(false);
    expect(hints["shells_action"]?.destructiveHint).toBe(true);
    expect(hints["shells_exec"]?.destructiveHint).toBe(true);
  });
});

describe("rendering results", () => {
  it("bounds a long exec output in both the text and the structured result", () => {
    const stdout = "line\n".repeat(100_000);
    const rendered = renderToolResult("shells_exec", {
      exitCode: 0,
      stdout,
      stderr: "warning: deprecated\n",
      durationMs: 12.4,
    });
    const result = rendered.structuredContent as {
      stdout: string;
      stderr: string;
      truncated?: boolean;
    };
    expect(result.stdout.length).toBeLessThan(OUTPUT_LIMIT_CHARS + 100);
    expect(result.stdout).toContain("of 500,000 bytes cut");
    expect(result.stderr).toBe("warning: deprecated\n");
    expect(result.truncated).toBe(true);
    expect(rendered.text.length).toBeLessThan(OUTPUT_LIMIT_CHARS + 300);
    expect(rendered.text).toMatch(/^exit code 0 after 12 ms\.\nstdout:\nline\n/);
    expect(rendered.text).toContain("stderr:\nwarning: deprecated");
  });

  it("says why the sandbox ended a command and leaves short output whole", () => {
    const rendered = renderToolResult("shells_exec", {
      exitCode: 137,
      stdout: "",
      stderr: "",
      durationMs: 60_000,
      killReason: "wall_clock",
    });
    expect(rendered.text).toBe(
      "exit code 137 after 60000 ms; killed by the sandbox: wall_clock.\nstdout: (empty)\nstderr: (empty)",
    );
    expect(rendered.structuredContent).not.toHaveProperty("truncated");
  });

  it("renders wipe_state as destroyed state in a shell that is still running", () => {
    const result: ActionResult = {
      capability: "wipe_state",
      message: "filesystem state destroyed, sandbox intact",
      shell,
    };
    const rendered = renderToolResult("shells_action", result);
    expect(rendered.structuredContent).toEqual(result);
    expect(rendered.text).toBe(
      "wipe_state: filesystem state destroyed, sandbox intact.\nShell now: scratch (id sh-1) is running · go · microvm (emulated) · network sealed · region local.",
    );
  });

  it("keeps the newest log entries within the bound", () => {
    const logs = Array.from({ length: 5000 }, (_, i) => ({
      time: "2026-01-01T00:00:00.000Z",
      kind: "exec" as const,
      message: `entry ${i} ${"·".repeat(50)}`,
    }));
    const rendered = renderToolResult("shells_action", {
      capability: "logs",
      message: "5000 log entries",
      shell,
      logs,
    });
    const kept = (rendered.structuredContent as { logs: typeof logs }).logs;
    expect(kept.length).toBeLessThan(200);
    expect(kept.at(-1)?.message).toContain("entry 4999");
    expect(rendered.text).toContain(`The newest ${kept.length} of 5000 entries:`);
  });

  it("tells a model that a pending approval has not happened yet", () => {
    const pending: PendingApproval = {
      status: "pending_approval",
      message:
        "stop on scratch waits for an approver (approval apr-1, expires 2026-01-02T00:00:00.000Z).",
      approval: {
        id: "apr-1",
        shellId: "sh-1",
        action: "stop",
        state: "pending",
        requestedBy: { type: "agent", id: "agt-1" },
        decidedBy: null,
        reason: null,
        outcome: null,
        createdAt: "2026-01-01T00:00:00.000Z",
        expiresAt: "2026-01-02T00:00:00.000Z",
        decidedAt: null,
      },
    };
    const rendered = renderToolResult("shells_action", pending);
    expect(rendered.structuredContent).toEqual(pending);
    expect(rendered.text).toMatch(/^Pending approval, not done yet: stop on scratch waits/);
    expect(rendered.text).toContain("do not retry");
  });

  it("renders a deleted shell", () => {
    const deleted: Shell = { ...shell, status: "deleted", statusReason: "deleted by agt-1" };
    expect(renderToolResult("shells_action", deleted)).toEqual({
      structuredContent: deleted,
      text: "Shell scratch (id sh-1) is deleted: every per-shell object was reclaimed.",
    });
  });

  it("renders a page of shells one line each, with the cursor of the next page", () => {
    const rendered = renderToolResult("shells_list", { items: [shell], nextCursor: "c2" });
    expect(rendered.text).toBe(
      '1 shell:\n- scratch (id sh-1) is running · go · microvm (emulated) · network sealed · region local\nMore shells: call shells_list with cursor "c2".',
    );
    expect(renderToolResult("shells_list", { items: [], nextCursor: null }).text).toBe(
      "No shells match.",
    );
  });

  it("shows a run's output tail when it reported no result, saying how much of each stream it is", () => {
    const run: Run = {
      id: "run-1",
      status: "failed",
      language: "python",
      runtime: "container",
      shellId: "sh-9",
      exitCode: 1,
      killReason: null,
      result: null,
      artifacts: [],
      output: {
        stdout: "step 3 of 3\n",
        stderr: 'Traceback (most recent call last):\nKeyError: "rows"\n',
        stdoutBytes: 9000,
        stderrBytes: 46,
      },
      error: null,
      createdAt: "2026-01-01T00:00:00.000Z",
      finishedAt: "2026-01-01T00:00:02.000Z",
    };
    const rendered = renderToolResult("shells_run", run);
    expect(rendered.text).toBe(
      [
        "Run run-1 failed with exit code 1.",
        "No structured result was reported.",
        "stdout (the last 12 of 9000 bytes):\nstep 3 of 3\n",
        'stderr:\nTraceback (most recent call last):\nKeyError: "rows"\n',
      ].join("\n"),
    );
    expect(rendered.structuredContent).toEqual(run);
    const quiet = renderToolResult("shells_run", {
      ...run,
      status: "succeeded",
      exitCode: 0,
      result: { ok: true },
      output: { stdout: "", stderr: "", stdoutBytes: 0, stderrBytes: 0 },
    });
    expect(quiet.text).toBe(
      'Run run-1 succeeded with exit code 0.\nResult: {"ok":true}\nstdout: (empty)\nstderr: (empty)',
    );
  });

  it("names an internet shell's egress allowlist", () => {
    const rendered = renderToolResult("shells_create", {
      ...shell,
      network: "internet",
      egress: { mode: "allowlist", allow: ["pypi.org", "*.pythonhosted.org"] },
    });
    expect(rendered.text).toContain(
      "network internet (egress allowed to pypi.org, *.pythonhosted.org) · region local",
    );
  });

  it("passes a result of an unknown shape on as bounded JSON", () => {
    const rendered = renderToolResult("shells_exec", { exitCode: 0, output: "x".repeat(50_000) });
    expect(rendered.text).toContain("bytes cut");
    expect(rendered.structuredContent).toEqual({ result: rendered.text });
    expect(renderToolResult("shells_list", { newer: true }).structuredContent).toEqual({
      newer: true,
    });
  });
});
