import type { Binding, Shell } from "@l1fe/shells";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";

const SECRET = "ghp_0123456789abcdefghij";

const binding: Binding = {
  id: "bnd-1",
  name: "github",
  upstream: "https://api.github.com",
  inject: "Authorization: Bearer {secret}",
  paths: ["/repos/**"],
  methods: ["GET"],
  envVar: "SHELLS_BINDING_GITHUB_URL",
  createdBy: { type: "user", id: "usr-1" },
  createdAt: "2025-06-01T11:00:00.000Z",
  rotatedAt: "2025-06-01T11:00:00.000Z",
};

/** The requests the stand-in API received, with their JSON bodies. */
let received: { method: string; path: string; body: unknown }[] = [];
let dir: string | undefined;

afterEach(() => {
  received = [];
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const fakeApi: typeof fetch = async (input, init) => {
  const request = new Request(input, init);
  const text = await request.text();
  const path = new URL(request.url).pathname;
  received.push({ method: request.method, path, body: text ? JSON.parse(text) : undefined });
  const answer = path.startsWith("/api/v1/shells")
    ? ({ id: "sh-1", name: "sh-1" } as Partial<Shell>)
    : path === "/api/v1/bindings" && request.method === "GET"
      ? { items: [binding] }
      : binding;
  return new Response(JSON.stringify(answer), {
    status: request.method === "POST" && !path.endsWith("/rotate") ? 201 : 200,
    headers: { "content-type": "application/json" },
  });
};

async function cli(args: string[], stdin?: string) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Object.assign(Readable.from(stdin === undefined ? [] : [Buffer.from(stdin)]), {
      isTTY: stdin === undefined,
    }),
    env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
    cwd: dir ?? "/nonexistent",
    fetch: fakeApi,
    now: () => Date.parse("2025-06-01T12:00:00Z"),
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

const CREATE = [
  "bindings",
  "create",
  "github",
  "--upstream",
  "https://api.github.com",
  "--inject",
  "Authorization: Bearer {secret}",
  "--path",
  "/repos/**",
  "--path",
  "/user",
  "--method",
  "GET",
  "POST",
];

describe("shells bindings", () => {
  it("creates a binding with the secret read from standard input, and prints it without the secret", async () => {
    const run = await cli(CREATE, `${SECRET}\n`);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(received).toEqual([
      {
        method: "POST",
        path: "/api/v1/bindings",
        body: {
          name: "github",
          upstream: "https://api.github.com",
          inject: "Authorization: Bearer {secret}",
          paths: ["/repos/**", "/user"],
          methods: ["GET", "POST"],
          secret: SECRET,
        },
      },
    ]);
    expect(run.stdout).toMatch(/^shell variable\s+SHELLS_BINDING_GITHUB_URL$/m);
    expect(run.stdout + run.stderr).not.toContain(SECRET);
  });

  it("reads the secret from --secret-file instead", async () => {
    dir = mkdtempSync(join(tmpdir(), "cli-bindings-"));
    writeFileSync(join(dir, "token"), `${SECRET}\n`);
    const run = await cli(["bindings", "rotate", "github", "--secret-file", "token"]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(received).toEqual([
      { method: "POST", path: "/api/v1/bindings/github/rotate", body: { secret: SECRET } },
    ]);
  });

  it("refuses to run without a secret on standard input or in a file, sending nothing", async () => {
    const run = await cli(CREATE);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain("the secret is read from standard input or --secret-file");
    expect(received).toEqual([]);
    expect((await cli(["bindings", "rotate", "github"], "\n")).stderr).toContain("empty");
    expect(received).toEqual([]);
  });

  it("lists and deletes bindings", async () => {
    const list = await cli(["bindings", "ls"]);
    expect(list.stdout).toMatch(
      /^github\s+https:\/\/api\.github\.com\s+GET\s+\/repos\/\*\*\s+60m ago$/m,
    );
    const removed = await cli(["bindings", "delete", "github"]);
    expect(removed.stdout).toBe("deleted binding github\n");
    expect(received.at(-1)).toMatchObject({ method: "DELETE", path: "/api/v1/bindings/github" });
  });

  it("grants bindings to a new shell and to a run with --binding", async () => {
    await cli(["create", "-l", "python", "--binding", "github", "-b", "payments"]);
    expect(received.at(-1)).toMatchObject({
      path: "/api/v1/shells",
      body: { language: "python", bindings: ["github", "payments"] },
    });
  });
});
