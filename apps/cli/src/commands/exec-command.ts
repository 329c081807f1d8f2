import type { ExecRequest, ExecResult } from "@l1fe/shells";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { parseDurationMs, parseEnvPair } from "../parsers.js";

interface ExecOptions {
  timeout?: number;
  cwd?: string;
  env?: Record<string, string>;
  /** False with `--no-stdin`. */
  stdin: boolean;
  /** False with `--no-stream`. */
  stream: boolean;
}

/**
 * The exit status `shells exec` ends with: the command's own, when a process can carry it (0–255);
 * otherwise 1, so a failure never reads as success.
 */
export function processExitCode(exitCode: number): number {
  return Number.isInteger(exitCode) && exitCode >= 0 && exitCode <= 255 ? exitCode : 1;
}

/** Reads a stream to its end as UTF-8 text. */
export async function readAll(stream: AsyncIterable<Buffer | string>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString("utf8");
}

/** Reports what the output cannot show: truncation, and a kill by the sandbox. */
function reportEnding(ctx: CliContext, result: ExecResult): void {
  if (result.truncated) ctx.printErr("shells: output was truncated at the server's limit");
  if (result.killReason) {
    ctx.printErr(
      `shells: the sandbox killed the command: ${result.killReason} (exit code ${result.exitCode})`,
    );
  }
}

/**
 * `shells exec ID -- CMD ARGS…`: run a command in a shell, print its output to the matching
 * streams as it happens (or all at the end, with `--no-stream` or `--json`) and exit with its exit
 * code.
 */
export function registerExecCommand(program: Command, ctx: CliContext): void {
  program
    .command("exec")
    .description("run a command in a shell and exit with its exit code")
    .argument("<id>", "shell id or name")
    .argument("<command...>", "the command and its arguments (put them after --)")
    .option(
      "--timeout <duration>",
      "wall-clock limit, e.g. 30s, 5m (bare number: seconds)",
      parseDurationMs,
    )
    .option("--cwd <dir>", "working directory (default: /workspace)")
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable)", parseEnvPair)
    .option("--no-stdin", "do not forward standard input, even when it is not a terminal")
    .option("--no-stream", "wait for the command, then print its output (--json implies it)")
    .addHelpText("after", "\nExample:\n  shells exec my-shell -- sh -c 'echo hi; exit 3'")
    .action(async (id: string, command: string[], options: ExecOptions) => {
      const request: ExecRequest = { command };
      if (options.timeout !== undefined) request.timeoutMs = options.timeout;
      if (options.cwd !== undefined) request.cwd = options.cwd;
      if (options.env !== undefined) request.env = options.env;
      if (options.stdin && !ctx.io.stdin.isTTY) {
        const input = await readAll(ctx.io.stdin);
        if (input !== "") request.stdin = input;
      }

      if (!options.stream || ctx.json) {
        const result = await ctx.client().exec(id, request);
        ctx.exitCode = processExitCode(result.exitCode);
        if (ctx.json) return ctx.printJson(result);
        ctx.io.stdout.write(result.stdout);
        ctx.io.stderr.write(result.stderr);
        return reportEnding(ctx, result);
      }
      for await (const frame of ctx.client().execStream(id, request)) {
        if (frame.type === "exit") {
          ctx.exitCode = processExitCode(frame.result.exitCode);
          reportEnding(ctx, frame.result);
        } else {
          (frame.type === "stdout" ? ctx.io.stdout : ctx.io.stderr).write(frame.data);
        }
      }
    });
}
