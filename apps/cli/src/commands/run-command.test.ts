import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";
import { parseFileIn } from "./run-command.js";

describe("shells run --file-in", () => {
  it("splits LOCAL:REMOTE at the last colon and defaults REMOTE to the file's name", () => {
    expect(parseFileIn("./data.csv:input/data.csv")).toEqual([
      { local: "./data.csv", remote: "input/data.csv" },
    ]);
    expect(parseFileIn("/tmp/a:b/c.txt:in.txt", [{ local: "x", remote: "x" }])).toEqual([
      { local: "x", remote: "x" },
      { local: "/tmp/a:b/c.txt", remote: "in.txt" },
    ]);
    expect(parseFileIn("dir/report.txt")).toEqual([
      { local: "dir/report.txt", remote: "report.txt" },
    ]);
    expect(() => parseFileIn("local:")).toThrow(/LOCAL\[:REMOTE\]/);
  });
});

describe("shells run --git-repo", () => {
  /** Runs the CLI against a stand-in control plane; answers the run bodies it was sent. */
  async function sent(args: string[]) {
    const bodies: unknown[] = [];
    const run = {
      id: "run-1",
      status: "succeeded",
      language: "python",
      runtime: "container",
      shellId: "sh-1",
      exitCode: 0,
      killReason: null,
      result: null,
      artifacts: [],
      output: null,
      error: null,
      createdAt: "2026-01-01T00:00:00.000Z",
      finishedAt: "2026-01-01T00:00:01.000Z",
    };
    const json = (body: unknown, status = 200) =>
      new Response(JSON.stringify(body), {
        status,
        headers: { "content-type": "application/json" },
      });
    const api: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      const { pathname } = new URL(request.url);
      if (request.method === "POST" && pathname === "/api/v1/runs") {
        bodies.push(await request.json());
        return json(run, 201);
      }
      if (pathname.endsWith("/stream"))
        return json({ items: [{ seq: 1, type: "exit", data: { exitCode: 0 }, time: 1 }] });
      return json(run);
    };
    let stderr = "";
    const io: CliIo = {
      stdout: { write: () => undefined },
      stderr: { write: (text: string) => (stderr += text) },
      stdin: Object.assign(Readable.from([]), { isTTY: true }),
      env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
      cwd: "/nonexistent",
      fetch: api,
    };
    const exitCode = await runCli(["run", "-l", "python", ...args], io);
    return { exitCode, bodies, stderr };
  }

  it("sends the git source, with the entrypoint as what runs", async () => {
    const { exitCode, bodies } = await sent([
      "--git-repo",
      "https://git.example.test/acme/tools.git",
      "--git-ref",
      "v1",
      "--git-subpath",
      "cli",
      "--git-entrypoint",
      "main.py",
      "--git-binding",
      "github",
    ]);
    expect(exitCode).toBe(0);
    expect(bodies).toEqual([
      {
        language: "python",
        git: {
          repo: "https://git.example.test/acme/tools.git",
          ref: "v1",
          subpath: "cli",
          entrypoint: "main.py",
          binding: "github",
        },
      },
    ]);
  });

  it("takes code beside a repo, and refuses git flags without --git-repo", async () => {
    const withCode = await sent(["--git-repo", "https://git.example.test/a.git", "-c", "print(1)"]);
    expect(withCode.bodies).toEqual([
      {
        language: "python",
        code: "print(1)",
        git: { repo: "https://git.example.test/a.git", ref: "main" },
      },
    ]);
    const stray = await sent(["--git-ref", "v1", "-c", "print(1)"]);
    expect(stray.exitCode).toBe(2);
    expect(stray.stderr).toContain("need --git-repo");
    expect(stray.bodies).toEqual([]);
  });
});
