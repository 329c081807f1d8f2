import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError } from "../errors.js";

interface ServeFlags {
  port?: string;
  host?: string;
  backend?: string;
  profile?: string;
  logLevel?: string;
}

/**
 * The control plane's entry file, found through the installed `@shells/server` package rather than
 * imported: the CLI stays a client, and the server runs in its own process.
 */
function serverEntry(): string {
  let packageJsonUrl: string;
  try {
    packageJsonUrl = import.meta.resolve("@shells/server/package.json");
  } catch (cause) {
    throw new CliError(
      "server_not_installed",
      `cannot find the @shells/server package (${String(cause)})`,
      {
        hint: "install it next to the CLI: npm install (from the repository root)",
      },
    );
  }
  const entry = fileURLToPath(new URL("./dist/server.js", packageJsonUrl));
  if (!existsSync(entry)) {
    throw new CliError("server_not_built", `${entry} does not exist`, {
      hint: "build it first: npm run build (from the repository root)",
    });
  }
  return entry;
}

/** The server's own flags, passed through as given: the server validates them and says what is wrong. */
export function serverArgs(flags: ServeFlags, dataDir: string | undefined): string[] {
  const args: string[] = [];
  if (flags.port !== undefined) args.push("--port", flags.port);
  if (flags.host !== undefined) args.push("--host", flags.host);
  if (dataDir !== undefined) args.push("--data-dir", dataDir);
  if (flags.backend !== undefined) args.push("--backend", flags.backend);
  if (flags.profile !== undefined) args.push("--profile", flags.profile);
  if (flags.logLevel !== undefined) args.push("--log-level", flags.logLevel);
  return args;
}

const FORWARDED_SIGNALS = ["SIGINT", "SIGTERM"] as const;

/**
 * `shells serve`: run the control plane in the foreground. Its output goes straight to this
 * terminal, SIGINT/SIGTERM are passed on to it, and the CLI exits with its exit status.
 */
export function registerServeCommand(program: Command, ctx: CliContext): void {
  program
    .command("serve")
    .description("run the control plane server in the foreground")
    .option("--port <port>", "port to listen on (env SHELLS_PORT, default 8080)")
    .option("--host <host>", "address to listen on (env SHELLS_HOST, default 127.0.0.1)")
    .option(
      "--backend <name>",
      "sandbox backend: container, or simulator (runs no code; for tests)",
    )
    .option("--profile <name>", "local (creates an org and admin key on first start) or hosted")
    .option("--log-level <level>", "log level (env SHELLS_LOG_LEVEL, default info)")
    .action(async (flags: ServeFlags, command: Command) => {
      const dataDir = command.optsWithGlobals<{ dataDir?: string }>().dataDir;
      const child = spawn(process.execPath, [serverEntry(), ...serverArgs(flags, dataDir)], {
        stdio: "inherit",
        env: ctx.io.env,
        cwd: ctx.io.cwd,
      });
      const forward = (signal: NodeJS.Signals) => child.kill(signal);
      for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
      try {
        ctx.exitCode = await new Promise<number>((resolve, reject) => {
          child.once("error", reject);
          child.once("exit", (code, signal) => {
            // A child ended by a signal exits as a shell reports it: 128 + the signal's number.
            resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
          });
        });
      } finally {
        for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
      }
    });
}
