import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

/** What one run of the built `shells` binary did. */
export interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `shells` binary in `cwd` with `env` added to this process's environment. */
export function runCli(args: string[], env: Record<string, string>, cwd: string): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      cwd,
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
    child.stdin.end();
  });
}

/** Runs the built `shells` binary against `server` as its owner, in `cwd`. */
export function cliAgainst(server: TestServer, args: string[], cwd: string): Promise<CliRun> {
  return runCli(args, { SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token }, cwd);
}

/** Runs the built `shells` binary pointed at no server at all (a closed loopback port), in `cwd`. */
export function cliOffline(args: string[], cwd: string): Promise<CliRun> {
  return runCli(args, { SHELLS_URL: "http://127.0.0.1:9", SHELLS_API_TOKEN: "sk_none" }, cwd);
}
