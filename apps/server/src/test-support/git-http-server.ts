import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

/**
 * A real git server for tests: `git http-backend` (git's own smart-HTTP server, as CGI) behind a
 * small Node HTTP server on loopback, serving the bare repos under one folder. Repos under
 * `/private/` answer only requests that carry the expected `Authorization` header.
 */
export interface GitHttpServer {
  url: string;
  port: number;
  /** Every request's path and headers, in order. */
  seen: { method: string; url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/** Runs git with a fixed identity and no user or system config. */
export function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", args, {
    cwd,
    encoding: "utf8",
    env: {
      PATH: process.env.PATH,
      HOME: cwd,
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_AUTHOR_NAME: "test",
      GIT_AUTHOR_EMAIL: "test@example.test",
      GIT_COMMITTER_NAME: "test",
      GIT_COMMITTER_EMAIL: "test@example.test",
    },
  }).trim();
}

/**
 * Makes a bare repo at `<root>/<name>.git` with one commit of `files` on `main` (and a tag `v1`),
 * and returns the commit id.
 */
export function makeRepo(
  root: string,
  name: string,
  files: Record<string, string | Buffer>,
): string {
  const work = join(root, `${name}.work`);
  mkdirSync(work, { recursive: true });
  git(work, "init", "-q", "-b", "main");
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(work, path, ".."), { recursive: true });
    writeFileSync(join(work, path), content);
  }
  git(work, "add", "-A");
  git(work, "commit", "-q", "-m", "first");
  git(work, "tag", "v1");
  const commit = git(work, "rev-parse", "HEAD");
  mkdirSync(join(root, name, ".."), { recursive: true });
  git(root, "clone", "-q", "--bare", work, `${name}.git`);
  return commit;
}

/** Starts the server for the bare repos under `root`; `/private/…` wants `Authorization: expected`. */
export async function startGitHttpServer(
  root: string,
  privateAuthorization: string,
): Promise<GitHttpServer> {
  const seen: GitHttpServer["seen"] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://git.test");
    seen.push({ method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers });
    if (
      url.pathname.startsWith("/private/") &&
      req.headers.authorization !== privateAuthorization
    ) {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="git"' });
      res.end("authentication required\n");
      return;
    }
    const cgi = spawn("git", ["http-backend"], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        GIT_CONFIG_NOSYSTEM: "1",
        GIT_CONFIG_GLOBAL: "/dev/null",
        REQUEST_METHOD: req.method ?? "GET",
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        ...(req.headers["git-protocol"]
          ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) }
          : {}),
        ...(req.headers["content-encoding"]
          ? { HTTP_CONTENT_ENCODING: String(req.headers["content-encoding"]) }
          : {}),
      },
      stdio: ["pipe", "pipe", "ignore"],
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on("data", (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString().split("\r\n")) {
        const colon = line.indexOf(":");
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === "status") status = Number.parseInt(value, 10);
        else headers[name] = value;
      }
      res.writeHead(status, headers);
      res.write(head.subarray(end + 4));
    });
    cgi.on("close", () => {
      if (!headersDone) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
