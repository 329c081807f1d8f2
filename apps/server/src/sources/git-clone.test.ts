import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readTar } from "@shells/sandbox";
import type { BindingTarget } from "../egress/binding-proxy.js";
import { parseInjectTemplate } from "../egress/binding-policy.js";
import { AppError } from "../errors.js";
import {
  makeRepo,
  startGitHttpServer,
  type GitHttpServer,
} from "../test-support/git-http-server.js";
import { cloneGitSource, parseRepoUrl, type GitCloneDeps } from "./git-clone.js";

// The clone step against a real git server on loopback, without a sandbox: what git is given (argv
// and environment, seen through a wrapper on PATH), where it connects, and what comes out.

const TOKEN = `tok_${randomBytes(16).toString("hex")}`;

describe("the git clone step", () => {
  let root = "";
  let server: GitHttpServer;
  let redirector: Server;
  let redirectorUrl = "";
  let argvLog = "";
  let savedPath: string | undefined;

  function target(upstream: string): BindingTarget {
    return {
      rules: {
        upstream: new URL(upstream),
        inject: parseInjectTemplate("Authorization: Bearer {secret}"),
        paths: ["/**"],
        methods: ["GET", "POST"],
      },
      secret: TOKEN,
    };
  }

  /** Deps whose vetting allows everything at `address`, with one binding `gh` to `upstream`. */
  function deps(upstream: string, address = "127.0.0.1"): GitCloneDeps {
    return {
      limits: { maxBytes: 1 << 20, maxFiles: 100, timeoutMs: 20_000 },
      vet: async () => ({ address, addresses: [address] }),
      bindings: {
        grantsFor: async (_org, names) => names.map((name) => ({ id: `bnd_${name}`, name })),
        target: async () => target(upstream),
      },
    };
  }

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "git-clone-test-"));
    makeRepo(root, "private/app", { "main.py": "print('hi')\n", "lib/util.py": "x = 1\n" });
    server = await startGitHttpServer(root, `Bearer ${TOKEN}`);
    // Sends every request on to the git server's private repo by a redirect.
    redirector = createServer((req, res) => {
      res.writeHead(302, { location: `${server.url}${req.url ?? "/"}` });
      res.end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, "127.0.0.1", resolve));
    redirectorUrl = `http://127.0.0.1:${(redirector.address() as AddressInfo).port}`;
    // A `git` on PATH that logs its argv and whether its environment holds the token.
    argvLog = join(root, "argv.log");
    const bin = join(root, "bin");
    const realGit = "/usr/bin/git";
    mkdirSync(bin);
    writeFileSync(
      join(bin, "git"),
      `#!/bin/sh\nprintf '%s\\n' "$*" >> '${argvLog}'\nexec ${realGit} "$@"\n`,
    );
    chmodSync(join(bin, "git"), 0o755);
    savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath ?? ""}`;
  });
  afterAll(async () => {
    process.env.PATH = savedPath;
    await server?.close();
    await new Promise((resolve) => redirector?.close(resolve));
    rmSync(root, { recursive: true, force: true });
  });

  it("clones a private repo with the binding's header, never in git's argv", async () => {
    const cloned = await cloneGitSource(deps(`${server.url}/private`), "org-1", {
      repo: `${server.url}/private/app.git`,
      ref: "main",
      binding: "gh",
    });
    const names = (await readTar(cloned.archive))
      .filter((e) => e.type === "file")
      .map((e) => e.name)
      .sort();
    expect(names).toEqual(["lib/util.py", "main.py"]);
    expect(cloned.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(server.seen.at(-1)?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(readFileSync(argvLog, "utf8")).not.toContain(TOKEN);
  });

  it("connects to the vetted address, whatever the name would resolve to", async () => {
    const named = `http://git.shells-test.invalid:${server.port}`;
    const cloned = await cloneGitSource(deps(`${named}/private`), "org-1", {
      repo: `${named}/private/app.git`,
      ref: "main",
      binding: "gh",
    });
    expect(cloned.files).toBe(2);
  });

  it("does not follow a redirect, so the header never reaches another host", async () => {
    const before = server.seen.length;
    const failed = await cloneGitSource(deps(`${redirectorUrl}/private`), "org-1", {
      repo: `${redirectorUrl}/private/app.git`,
      ref: "main",
      binding: "gh",
    }).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(AppError);
    expect((failed as AppError).code).toBe("git_repo_unreachable");
    expect((failed as AppError).message).not.toContain(TOKEN);
    expect(server.seen.length).toBe(before);
  });

  it("refuses repo URLs that are not http(s), carry credentials or a query", () => {
    for (const repo of [
      "ssh://git@example.test/a.git",
      "file:///etc",
      "https://user:pw@example.test/a.git",
      "https://example.test/a.git?x=1",
      "not a url",
    ])
      expect(() => parseRepoUrl(repo), repo).toThrow(
        expect.objectContaining({ code: "git_repo_invalid" }),
      );
    expect(parseRepoUrl("https://example.test/a.git").host).toBe("example.test");
  });
});
