#!/usr/bin/env node
/** The `shells` executable: runs the CLI against this process and exits with its status. */
import { CLI_VERSION } from "./version.js";

const args = process.argv.slice(2);
// `--version` alone answers before the command tree loads: building it loads the API contract's
// schemas, most of the CLI's start-up time, and printing a version needs none of it.
if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) {
  process.stdout.write(`${CLI_VERSION}\n`);
} else {
  const { runCli } = await import("./program.js");
  process.exitCode = await runCli(args, {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
  });
}
