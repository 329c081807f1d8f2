import type { ShellGitSource } from "@shells/contract";
import { TarFormatError, UnsafeTarError, sanitizeTar } from "@shells/sandbox";
import { spawn } from "node:child_process";
import { lstat, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { injectedValue, pathMatches, secretForms } from "../egress/binding-policy.js";
import type { BindingGrant, BindingTarget } from "../egress/binding-proxy.js";
import type { VettedDestination } from "../egress/egress-proxy.js";
import type { EgressScope } from "../egress/egress-service.js";
import { AppError } from "../errors.js";

/**
 * The clone step of a git workload source: the security boundary between a repo's credential and
 * the workload. It runs on the host, in the control plane, with the `git` CLI, never in the
 * sandbox: a shallow fetch of one ref (depth 1, no tags, no submodules) into a temporary directory,
 * then `git archive` of that one commit, so what reaches the shell is the commit's files and
 * nothing of `.git` — no config, no remote, no history, no credential. A private repo's credential
 * is a service binding's secret, handed to git only as an `http.<upstream>.extraHeader` in the
 * environment (`GIT_CONFIG_COUNT`/`KEY`/`VALUE`: never in argv, never on disk), scoped by git to
 * the binding's upstream, with redirects off so it is never sent anywhere else. The repo's host is
 * vetted by the org's egress rules like any destination, and git is pinned to the vetted address
 * (`http.curloptResolve`), so a name cannot resolve to a private address on the second look.
 */

/** Bounds of one clone. */
export interface GitCloneLimits {
  /** Most bytes fetched (the pack, as it lands on disk) and most bytes of the commit's files. */
  maxBytes: number;
  /** Most files in the commit (under the subpath). */
  maxFiles: number;
  /** Wall clock of the whole clone. */
  timeoutMs: number;
}

/** What the clone step needs from the rest of the control plane. */
export interface GitCloneDeps {
  limits: GitCloneLimits;
  /**
   * Vets a destination with the org's egress rules and those of the project and template the
   * clone is for (see `EgressService.vet`).
   */
  vet(orgId: string, host: string, port: number, scope?: EgressScope): Promise<VettedDestination>;
  /** The org's bindings: a grant by name (404 when unknown) and its rules and secret. */
  bindings?: {
    grantsFor(orgId: string, names: readonly string[]): Promise<BindingGrant[]>;
    target(orgId: string, bindingId: string): Promise<BindingTarget | null | "unusable">;
  };
}

/** A commit's files, ready for a shell's `/workspace`. */
export interface ClonedSource {
  /** The commit the ref named. */
  commit: string;
  /** A tar of the commit's files (of the subpath), checked like an upload. */
  archive: Uint8Array;
  /** Files in it. */
  files: number;
}

/** Environment git runs with: nothing of the server's, no config but what the clone sets. */
function gitEnvironment(home: string, config: readonly [string, string][]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    XDG_CONFIG_HOME: home,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    GIT_ASKPASS: "/bin/false",
    SSH_ASKPASS: "/bin/false",
    GIT_ALLOW_PROTOCOL: "http:https",
    GIT_LFS_SKIP_SMUDGE: "1",
    LC_ALL: "C",
    GIT_CONFIG_COUNT: String(config.length),
  };
  config.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return env;
}

interface GitResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** Why it was stopped: the deadline, or its output past the byte bound. */
  stopped: "timeout" | "too_large" | null;
}

/** How one git command is bounded besides the clone's deadline. */
interface GitBounds {
  /** Most bytes of stdout kept; past them git is stopped as too large. */
  maxStdout?: number;
  /** Checked every 100 ms; true stops git as too large (the fetch's bytes on disk). */
  overLimit?: () => Promise<boolean>;
}

/** Runs git; stops it at `deadline`, or as too large per `bounds`. */
function runGit(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  deadline: number,
  bounds: GitBounds = {},
): Promise<GitResult> {
  const maxStdout = bounds.maxStdout ?? 1 << 20;
  return new Promise((resolve) => {
    const child = spawn("git", args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = "";
    let stopped: GitResult["stopped"] = null;
    const stop = (why: NonNullable<GitResult["stopped"]>) => {
      stopped ??= why;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(() => stop("timeout"), Math.max(0, deadline - Date.now()));
    const { overLimit } = bounds;
    const watch = overLimit
      ? setInterval(() => {
          void overLimit().then((over) => over && stop("too_large"));
        }, 100)
      : undefined;
    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxStdout) stop("too_large");
      else out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 16_384) stderr += chunk.toString();
    });
    child.on("error", (error) => {
      stderr += String(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      clearInterval(watch);
      resolve({ code, stdout: Buffer.concat(out), stderr, stopped });
    });
  });
}

/** Parses and checks a repo URL: http(s), a host, no credentials, query or fragment. */
export function parseRepoUrl(repo: string): URL {
  let url: URL;
  try {
    url = new URL(repo);
  } catch {
    throw new AppError("git_repo_invalid", `The git repo ${JSON.stringify(repo)} is not a URL.`);
  }
  const refuse = (why: string): never => {
    throw new AppError("git_repo_invalid", `The git repo URL ${why}.`, { repo: url.origin });
  };
  if (url.protocol !== "https:" && url.protocol !== "http:") refuse("must be https:// or http://");
  if (!url.hostname) refuse("must name a host");
  if (url.username || url.password)
    refuse("may not carry credentials (name a binding in git.binding instead)");
  if (url.search || url.hash) refuse("may not have a query or a fragment");
  return url;
}

/**
 * The header a binding puts on the clone's requests, after checking that the binding covers the
 * repo: the same origin as its upstream, the repo under its base path, and GET and POST allowed on
 * the two paths of git's smart HTTP (`/info/refs`, `/git-upload-pack`) under the repo.
 */
async function bindingHeader(
  deps: GitCloneDeps,
  orgId: string,
  name: string,
  repo: URL,
): Promise<{ origin: string; header: string; forms: string[] }> {
  if (!deps.bindings)
    throw new AppError("bindings_unavailable", "This server runs no service bindings.");
  const [grant] = await deps.bindings.grantsFor(orgId, [name]);
  const target = grant ? await deps.bindings.target(orgId, grant.id) : null;
  if (target === null)
    throw new AppError("binding_not_found", `No binding named ${name} in this org.`, { name });
  const mismatch = (why: string): never => {
    throw new AppError(
      "git_binding_mismatch",
      `The binding ${name} does not cover the repo: ${why}.`,
      {
        binding: name,
      },
    );
  };
  if (target === "unusable") return mismatch("its upstream is not allowed on this server");
  const { upstream, inject, paths, methods } = target.rules;
  if (upstream.origin !== repo.origin)
    mismatch(`it calls ${upstream.origin}, the repo is on ${repo.origin}`);
  const base = upstream.pathname.replace(/\/+$/, "");
  const repoPath = repo.pathname.replace(/\/+$/, "");
  if (!repoPath.startsWith(`${base}/`)) mismatch(`the repo is not under ${base || "/"}`);
  const relative = repoPath.slice(base.length);
  for (const [method, path] of [
    ["GET", `${relative}/info/refs`],
    ["POST", `${relative}/git-upload-pack`],
  ] as const) {
    if (!(methods as readonly string[]).includes(method)) mismatch(`it does not allow ${method}`);
    if (!paths.some((glob) => pathMatches(glob, path))) mismatch(`it does not allow ${path}`);
  }
  const value = injectedValue(inject, target.secret);
  return {
    origin: `${upstream.origin}${base}/`,
    header: `${inject.header}: ${value}`,
    forms: secretForms(target.secret, value),
  };
}

/** Replaces every form of a secret in git's own words before they go into an error. */
function masked(text: string, forms: readonly string[]): string {
  let out = text;
  for (const form of forms) out = out.split(form).join("[redacted]");
  return out
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .slice(-3)
    .join(" / ")
    .slice(0, 500);
}

/**
 * Clones `source` for an org and returns the commit's files as a checked tar. Errors are stable
 * API codes: `git_repo_invalid`, `git_repo_not_allowed`, `git_repo_unreachable`,
 * `git_ref_not_found`, `git_repo_too_large`, `git_path_not_found`, `git_binding_mismatch`.
 */
export async function cloneGitSource(
  deps: GitCloneDeps,
  orgId: string,
  source: ShellGitSource & { entrypoint?: string | undefined },
  scope: EgressScope = {},
): Promise<ClonedSource> {
  const { limits } = deps;
  const repo = parseRepoUrl(source.repo);
  const auth = source.binding ? await bindingHeader(deps, orgId, source.binding, repo) : null;
  const forms = auth?.forms ?? [];
  const host = repo.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = repo.port ? Number(repo.port) : repo.protocol === "https:" ? 443 : 80;
  const vetted = await deps.vet(orgId, host, port, scope);
  if ("denial" in vetted)
    throw new AppError(
      "git_repo_not_allowed",
      `The egress rules do not allow the git repo's host ${host}:${port} (${vetted.denial}).`,
      { host, port, reason: vetted.denial },
    );
  const pinned = vetted.address.includes(":") ? `[${vetted.address}]` : vetted.address;
  const config: [string, string][] = [
    // Pin git to the address the rules vetted: no second lookup, no rebinding.
    ["http.curloptResolve", `${host}:${port}:${pinned}`],
    // Never follow a redirect: the credential and the clone stay on the vetted host.
    ["http.followRedirects", "false"],
    ["http.lowSpeedLimit", "1"],
    ["http.lowSpeedTime", String(Math.ceil(limits.timeoutMs / 1000))],
    ["protocol.allow", "never"],
    ["protocol.https.allow", "always"],
    ["protocol.http.allow", "always"],
    ["transfer.fsckObjects", "true"],
    ["core.hooksPath", "/dev/null"],
    ["submodule.recurse", "false"],
  ];
  if (auth) config.push([`http.${auth.origin}.extraHeader`, auth.header]);
  const work = await mkdtemp(join(tmpdir(), "shells-git-"));
  const deadline = Date.now() + limits.timeoutMs;
  try {
    const env = gitEnvironment(work, config);
    const dir = join(work, "repo");
    const git = (args: string[], bounds?: GitBounds) =>
      runGit(["-C", dir, ...args], env, deadline, bounds);
    await runGit(["init", "-q", "--template=", dir], env, deadline);
    // One ref, one commit, no tags, no submodules; the pack is watched as it lands on disk, so a
    // huge repo is stopped at the bound instead of filling the host's disk.
    const objects = join(dir, ".git", "objects");
    const overLimit = async () => (await diskBytes(objects)) > limits.maxBytes;
    const fetched = await git(
      [
        "fetch",
        "--quiet",
        "--depth=1",
        "--no-tags",
        "--no-recurse-submodules",
        "--",
        repo.href,
        source.ref,
      ],
      { overLimit },
    );
    if (fetched.code === 0 && (await overLimit())) fetched.stopped = "too_large";
    if (fetched.stopped === "timeout")
      throw new AppError(
        "git_repo_unreachable",
        `Cloning the git repo took longer than ${limits.timeoutMs} ms.`,
      );
    if (fetched.stopped === "too_large")
      throw tooLarge(`fetching it passed ${limits.maxBytes} bytes`, limits);
    if (fetched.code !== 0) {
      const said = masked(fetched.stderr, forms);
      if (/couldn't find remote ref|not our ref|no such remote ref|unadvertised object/i.test(said))
        throw new AppError("git_ref_not_found", `The git repo has no ref ${source.ref}.`, {
          ref: source.ref,
        });
      throw new AppError("git_repo_unreachable", `The git repo could not be fetched: ${said}`, {
        repo: repo.origin + repo.pathname,
      });
    }
    const commit = (await git(["rev-parse", "--verify", "FETCH_HEAD^{commit}"])).stdout
      .toString()
      .trim();
    const tree = source.subpath ? `${commit}:${source.subpath}` : commit;
    const listing = await git(["ls-tree", "-r", "-l", "-z", tree], { maxStdout: 64 << 20 });
    if (listing.code !== 0)
      throw new AppError(
        "git_path_not_found",
        `The commit has no folder ${source.subpath ?? ""}.`,
        {
          subpath: source.subpath,
        },
      );
    const entries = listing.stdout
      .toString()
      .split("\0")
      .filter(Boolean)
      .map((line) => {
        const [meta = "", path = ""] = line.split("\t");
        const [mode, type, , size] = meta.split(/\s+/);
        return { mode, type, path, size: Number(size) || 0 };
      });
    const blobs = entries.filter((e) => e.type === "blob");
    const bytes = blobs.reduce((sum, e) => sum + e.size, 0);
    if (blobs.length > limits.maxFiles) throw tooLarge(`it holds ${blobs.length} files`, limits);
    if (bytes > limits.maxBytes) throw tooLarge(`its files hold ${bytes} bytes`, limits);
    if (source.entrypoint) {
      const entry = posix.normalize(source.entrypoint);
      if (!blobs.some((e) => e.path === entry))
        throw new AppError(
          "git_path_not_found",
          `The commit has no file ${source.entrypoint}${source.subpath ? ` under ${source.subpath}` : ""}.`,
          { entrypoint: source.entrypoint },
        );
    }
    // Files only: `git archive` writes the tree, never `.git`.
    const archived = await git(["archive", "--format=tar", tree], {
      maxStdout: limits.maxBytes + (blobs.length + 64) * 1024,
    });
    if (archived.code !== 0 || archived.stopped)
      throw new AppError(
        "git_repo_unreachable",
        `The commit could not be archived: ${masked(archived.stderr, forms)}`,
      );
    try {
      const checked = await sanitizeTar(archived.stdout);
      return { commit, archive: checked.archive, files: blobs.length };
    } catch (error) {
      if (error instanceof UnsafeTarError || error instanceof TarFormatError)
        throw new AppError(
          "git_repo_invalid",
          `The commit holds ${error.message}; it is not copied into a shell.`,
        );
      throw error;
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function tooLarge(why: string, limits: GitCloneLimits): AppError {
  return new AppError(
    "git_repo_too_large",
    `The git repo is larger than this server clones: ${why} (at most ${limits.maxBytes} bytes and ${limits.maxFiles} files).`,
    { maxBytes: limits.maxBytes, maxFiles: limits.maxFiles },
  );
}

/** Bytes of the files under `dir` (0 when it is not there yet). */
async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (path: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(path);
    } catch {
      return;
    }
    for (const name of names) {
      const child = join(path, name);
      const info = await lstat(child).catch(() => null);
      if (!info) continue;
      if (info.isDirectory()) await walk(child);
      else total += info.size;
    }
  };
  await walk(dir);
  return total;
}
