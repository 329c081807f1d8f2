import ShellsClient from "@l1fe/shells";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import {
  makeRepo,
  startGitHttpServer,
  type GitHttpServer,
} from "../../apps/server/src/test-support/git-http-server.js";
import { startTestServer, type TestServer } from "./harness.js";

// Runs from a git source through real container shells and a real git server (`git http-backend`
// on loopback). The control plane clones on the host and copies the commit's files into the
// shell; a private repo's token comes from a service binding. The shell is then searched for the
// token everywhere it can look: /workspace (a .git included, were there one), the environment and
// command line of every process. Bad refs, unreachable, refused and oversize repos are clear errors.

const TOKEN = `ghp_${randomBytes(20).toString("hex")}`;
/** The server's bound on a clone; the big repo is over it. */
const MAX_BYTES = 1024 * 1024;

describe.runIf(hostReport.available)("runs from a git source", () => {
  let server: TestServer;
  let gitServer: GitHttpServer;
  let shells: ShellsClient;
  let root = "";
  let publicCommit = "";
  let privateCommit = "";
  /** Every API response body the test read. */
  const responses: string[] = [];

  async function post(
    path: string,
    body: unknown,
  ): Promise<{ status: number; body: { error?: { code: string } } }> {
    const res = await fetch(`${server.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    responses.push(text);
    return { status: res.status, body: JSON.parse(text) as { error?: { code: string } } };
  }

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "git-source-e2e-"));
    const files = {
      "main.py": `import json, os
listing = sorted(os.listdir("/workspace"))
shells.result({"files": listing, "data": open("data.txt").read(), "commit": os.environ.get("SHELLS_GIT_COMMIT")})
`,
      "data.txt": "hello from git\n",
      "tools/tool.py": `import os
shells.result({"cwd": os.getcwd(), "files": sorted(os.listdir("/workspace"))})
`,
      "tools/run.sh": "#!/bin/sh\necho tool\n",
    };
    publicCommit = makeRepo(root, "public", files);
    privateCommit = makeRepo(root, "private/app", {
      ...files,
      "secret-hunt.py": "print('private repo')\n",
    });
    makeRepo(root, "big", { "blob.bin": randomBytes(3 * MAX_BYTES) });
    gitServer = await startGitHttpServer(root, `Bearer ${TOKEN}`);
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_BINDINGS_ALLOW_HTTP: "1", SHELLS_GIT_MAX_BYTES: String(MAX_BYTES) },
    });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    // The git server is on loopback: the org allows exactly that address (127.0.0.3 stays refused).
    await shells.policy.update({ egress: { allowCidrs: ["127.0.0.1/32"] } });
    await shells.bindings.create({
      name: "gitpriv",
      upstream: `${gitServer.url}/private`,
      inject: "Authorization: Bearer {secret}",
      paths: ["/app.git/**"],
      methods: ["GET", "POST"],
      secret: TOKEN,
    });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await gitServer?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it("copies the commit's files into /workspace, without .git, and runs the entrypoint", async () => {
    const run = await shells.run({
      language: "python",
      git: { repo: `${gitServer.url}/public.git`, ref: "main", entrypoint: "main.py" },
    });
    const done = await run.result();
    await run.teardown();
    expect(done.status, JSON.stringify(done)).toBe("succeeded");
    expect(done.result).toEqual({
      files: ["data.txt", "main.py", "tools"],
      data: "hello from git\n",
      commit: publicCommit,
    });
    const audit = await run.audit();
    expect(audit.find((e) => e.action === "run.start")?.details).toMatchObject({
      mode: "git",
      git: { ref: "main", commit: publicCommit, files: 4 },
    });
  });

  it("takes a tag and a subpath: the folder's contents become /workspace", async () => {
    const run = await shells.run({
      language: "python",
      git: {
        repo: `${gitServer.url}/public.git`,
        ref: "v1",
        subpath: "tools",
        entrypoint: "tool.py",
      },
    });
    const done = await run.result();
    await run.teardown();
    expect(done.result).toEqual({ cwd: "/workspace", files: ["run.sh", "tool.py"] });
  });

  it("clones a private repo with a binding's token that is nowhere in the shell", async () => {
    const before = gitServer.seen.length;
    const run = await shells.run({
      language: "python",
      git: { repo: `${gitServer.url}/private/app.git`, ref: "main", binding: "gitpriv" },
      code: `import os
found = []
def search(label, data):
    if ${JSON.stringify(TOKEN)}.encode() in data:
        found.append(label)
for folder, _, names in os.walk("/workspace"):
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            search(os.path.join(folder, name), f.read())
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as f:
                search(f"/proc/{pid}/{part}", f.read())
        except OSError:
            pass
search("env", repr(dict(os.environ)).encode())
shells.result({"found": found, "files": sorted(os.listdir("/workspace")), "git": os.path.exists("/workspace/.git")})
`,
    });
    const done = await run.result();
    await run.teardown();
    // The test searched for the token it knows; the shell only reports where it found it.
    expect(done.result).toEqual({
      found: [],
      files: ["data.txt", "main.py", "secret-hunt.py", "tools"],
      git: false,
    });
    const calls = gitServer.seen.slice(before);
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((c) => c.headers.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(calls.every((c) => c.url.startsWith("/private/app.git/"))).toBe(true);
    const audit = await run.audit();
    expect(audit.find((e) => e.action === "run.start")?.details).toMatchObject({
      git: { commit: privateCommit },
    });
    // Nor in any answer or record the API gave.
    const shown = [
      ...responses,
      JSON.stringify(done),
      JSON.stringify(audit),
      JSON.stringify(await shells.runs.list()),
    ];
    for (const text of shown) expect(text).not.toContain(TOKEN);
    // Nor left on the host: the clone's temporary folder is gone.
    expect(readdirSync(tmpdir()).filter((name) => name.startsWith("shells-git-"))).toEqual([]);
  });

  it("starts a shell with a repo's files at one ref, and records which commit", async () => {
    const shell = await shells.create({
      language: "bash",
      git: { repo: `${gitServer.url}/public.git`, ref: "v1", subpath: "tools" },
    });
    try {
      const listed = await shells.exec(shell.id, {
        command: ["sh", "-c", 'ls -A /workspace; echo "commit=$SHELLS_GIT_COMMIT"'],
      });
      expect(listed.stdout).toBe(`run.sh\ntool.py\ncommit=${publicCommit}\n`);
      expect(shell.envKeys).toContain("SHELLS_GIT_COMMIT");
      const events = await shells
        .activity({ shell: shell.id, action: "shell.git_source" })
        .toArray();
      expect(events.map((e) => e.details)).toEqual([
        {
          repo: `${gitServer.url}/public.git`,
          ref: "v1",
          subpath: "tools",
          commit: publicCommit,
          files: 2,
        },
      ]);
    } finally {
      await shells.delete(shell.id);
    }
  });

  it("refuses a shell's git source before the shell exists, with the project's egress rules too", async () => {
    const before = (await shells.list().toArray()).length;
    const badRef = await post("/api/v1/shells", {
      language: "bash",
      git: { repo: `${gitServer.url}/public.git`, ref: "no-such-branch" },
    });
    expect([badRef.status, badRef.body.error?.code]).toEqual([422, "git_ref_not_found"]);
    const entrypoint = await post("/api/v1/shells", {
      language: "bash",
      git: { repo: `${gitServer.url}/public.git`, ref: "main", entrypoint: "main.py" },
    });
    expect([entrypoint.status, entrypoint.body.error?.code]).toEqual([400, "validation_failed"]);
    // The org allows the git server; a project that denies it refuses the clone for its shells.
    await shells.projects.create({ name: "no-loopback" });
    await shells.projects.setEgress("no-loopback", { denyCidrs: ["127.0.0.0/8"] });
    const refused = await post("/api/v1/shells", {
      language: "bash",
      project: "no-loopback",
      git: { repo: `${gitServer.url}/public.git`, ref: "main" },
    });
    expect([refused.status, refused.body.error?.code]).toEqual([403, "git_repo_not_allowed"]);
    expect(await shells.list().toArray()).toHaveLength(before);
  });

  it("answers clear errors for a bad ref, a private repo without its binding, an unreachable or oversize repo", async () => {
    const cases: [unknown, number, string][] = [
      [{ repo: `${gitServer.url}/public.git`, ref: "no-such-branch" }, 422, "git_ref_not_found"],
      [{ repo: `${gitServer.url}/private/app.git`, ref: "main" }, 422, "git_repo_unreachable"],
      [{ repo: `${gitServer.url}/missing.git`, ref: "main" }, 422, "git_repo_unreachable"],
      [{ repo: `http://127.0.0.1:1/x.git`, ref: "main" }, 422, "git_repo_unreachable"],
      [{ repo: `${gitServer.url}/big.git`, ref: "main" }, 413, "git_repo_too_large"],
      [
        { repo: `http://127.0.0.3:${gitServer.port}/public.git`, ref: "main" },
        403,
        "git_repo_not_allowed",
      ],
      [
        { repo: `${gitServer.url}/public.git`, ref: "main", binding: "gitpriv" },
        403,
        "git_binding_mismatch",
      ],
      [
        { repo: `${gitServer.url}/public.git`, ref: "main", subpath: "nope" },
        422,
        "git_path_not_found",
      ],
      [
        { repo: `${gitServer.url}/public.git`, ref: "main", entrypoint: "nope.py" },
        422,
        "git_path_not_found",
      ],
      [
        { repo: `http://user:${TOKEN}@127.0.0.1:${gitServer.port}/public.git`, ref: "main" },
        400,
        "git_repo_invalid",
      ],
      [{ repo: `file://${root}/public.git`, ref: "main" }, 400, "git_repo_invalid"],
      [
        { repo: `${gitServer.url}/public.git`, ref: "--upload-pack=touch" },
        400,
        "validation_failed",
      ],
    ];
    for (const [git, status, code] of cases) {
      const runs = (git as { entrypoint?: string }).entrypoint ? {} : { code: "print(1)" };
      const answer = await post("/api/v1/runs", { language: "python", ...runs, git });
      expect([answer.status, answer.body.error?.code], JSON.stringify(git)).toEqual([status, code]);
      expect(JSON.stringify(answer.body)).not.toContain(TOKEN);
    }
    // None of them left a run or a shell behind.
    expect(await shells.runs.list()).toHaveLength(3);
    expect(readFileSync(join(root, "public.git", "HEAD"), "utf8")).toContain("main");
  });
});
