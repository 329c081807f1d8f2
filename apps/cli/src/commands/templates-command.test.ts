import type { TemplateDiff, TemplateImage, TemplateVersion } from "@shells/contract";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";

const DEFINITION = {
  language: "python",
  network: "sealed",
  files: [{ path: "POLICY.md", content: "careful\n", readOnly: true }],
  locks: ["network"],
};

const version: TemplateVersion = {
  template: "py",
  version: 1,
  definition: DEFINITION as TemplateVersion["definition"],
  sha256: "a".repeat(64),
  createdBy: { type: "user", id: "usr-1" },
  createdAt: "2025-06-01T11:00:00.000Z",
};

const diff: TemplateDiff = {
  template: "py",
  from: 1,
  to: 2,
  changes: [{ field: "network", change: "changed", from: "sealed", to: "localhost" }],
};

/** What the image route answers, one per call (the build request first, then each poll). */
let images: TemplateImage[] = [];
const image = (state: TemplateImage["state"], message: string | null, percent: number | null) => ({
  template: "py",
  version: 1,
  imageId: `img-${"c".repeat(32)}`,
  state,
  message,
  percent,
});

let received: { method: string; url: string; body: unknown }[] = [];
let dir: string | undefined;

afterEach(() => {
  received = [];
  images = [];
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

const fakeApi: typeof fetch = async (input, init) => {
  const request = new Request(input, init);
  const text = await request.text();
  const url = new URL(request.url);
  received.push({
    method: request.method,
    url: url.pathname + url.search,
    body: text ? JSON.parse(text) : undefined,
  });
  const answer = url.pathname.endsWith("/diff")
    ? diff
    : url.pathname.endsWith("/image")
      ? images.shift()
      : version;
  return new Response(JSON.stringify(answer), {
    status: request.method === "POST" ? 201 : 200,
    headers: { "content-type": "application/json" },
  });
};

async function cli(args: string[]) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
    cwd: dir ?? "/nonexistent",
    fetch: fakeApi,
    now: () => Date.parse("2025-06-01T12:00:00Z"),
  };
  const exitCode = await runCli(args, io);
  return { exitCode, stdout, stderr };
}

describe("shells templates", () => {
  it("creates a template from a JSON definition file and prints its version", async () => {
    dir = mkdtempSync(join(tmpdir(), "cli-templates-"));
    writeFileSync(join(dir, "py.json"), JSON.stringify(DEFINITION));
    const run = await cli(["templates", "create", "py", "-f", "py.json", "--project", "lab"]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(received).toEqual([
      {
        method: "POST",
        url: "/api/v1/templates",
        body: { name: "py", project: "lab", definition: DEFINITION },
      },
    ]);
    expect(run.stdout).toMatch(/^template\s+py@1$/m);
    expect(run.stdout).toMatch(/^files\s+POLICY\.md \(read-only\)$/m);
  });

  it("refuses a definition file that is not a valid definition before calling the server", async () => {
    dir = mkdtempSync(join(tmpdir(), "cli-templates-"));
    writeFileSync(join(dir, "bad.json"), JSON.stringify({ language: "cobol" }));
    const run = await cli(["templates", "version", "py", "-f", "bad.json"]);
    expect(run.exitCode).not.toBe(0);
    expect(run.stderr).toContain("language");
    expect(received).toEqual([]);
  });

  it("shows one version and a field-by-field diff", async () => {
    expect((await cli(["templates", "show", "py@1"])).exitCode).toBe(0);
    const shown = await cli(["templates", "diff", "py", "1", "2"]);
    expect(shown.stdout).toMatch(/network\s+changed\s+"sealed"\s+"localhost"/);
    expect(received.map((r) => r.url)).toEqual([
      "/api/v1/templates/py/versions/1",
      "/api/v1/templates/py/diff?from=1&to=2",
    ]);
  });

  it("builds a version's image with a progress line per step, and says when it is ready", async () => {
    images = [
      image("building", "starting the build", 0),
      image("building", "downloading packages with apt...", 20),
      image("ready", null, 100),
    ];
    const run = await cli(["templates", "build", "py@1"]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr.trim().split("\n")).toEqual([
      `building img-${"c".repeat(32)}: starting the build (0%)`,
      `building img-${"c".repeat(32)}: downloading packages with apt... (20%)`,
    ]);
    expect(run.stdout.trim()).toBe(`py@1: image img-${"c".repeat(32)} is ready`);
    expect(received.map((r) => `${r.method} ${r.url}`)).toEqual([
      "POST /api/v1/templates/py/versions/1/image",
      "GET /api/v1/templates/py/versions/1/image",
      "GET /api/v1/templates/py/versions/1/image",
    ]);
  });

  it("fails with the build's reason when the image does not build", async () => {
    images = [image("failed", "mmdebstrap failed: E: Unable to locate package nosuch", null)];
    const run = await cli(["templates", "build", "py@1"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(
      "the image build failed: mmdebstrap failed: E: Unable to locate package nosuch",
    );
  });
});
