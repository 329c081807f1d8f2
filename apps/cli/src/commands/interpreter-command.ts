import type { InterpreterRequest, InterpreterResult } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { parseDurationMs } from "../parsers.js";
import { readAll } from "./exec-command.js";

interface InterpreterFlags {
  language?: "python" | "node";
  timeout?: number;
}

/** How a turn's value reads: a string (often a repr) as it is, anything else as JSON. */
export function formatInterpreterValue(value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** Prints a turn as a REPL would: output, then the value, or the error's traceback (on stderr). */
function printTurn(ctx: CliContext, result: InterpreterResult): void {
  ctx.io.stdout.write(result.stdout);
  ctx.io.stderr.write(result.stderr);
  if (result.error) {
    const { name, message, traceback } = result.error;
    ctx.printErr(traceback.trim() !== "" ? traceback : `${name}: ${message}`);
    return;
  }
  const value = formatInterpreterValue(result.value);
  if (value !== undefined) ctx.print(value);
}

/**
 * `shells interpreter ID CODE|-`: one turn in the shell's warm interpreter (state persists between
 * turns). Exits 1 when the code raised.
 */
export function registerInterpreterCommand(program: Command, ctx: CliContext): void {
  program
    .command("interpreter")
    .description("run code in the shell's warm python or node interpreter (state persists)")
    .argument("<id>", "shell id or name")
    .argument("<code>", "the code, or - to read it from standard input")
    .addOption(
      new Option(
        "-l, --language <language>",
        "interpreter (default: the shell's language)",
      ).choices(["python", "node"]),
    )
    .option("--timeout <duration>", "wall clock of this turn, e.g. 30s, 5m", parseDurationMs)
    .addHelpText(
      "after",
      "\nExamples:\n  shells interpreter my-shell 'x = 41'\n  shells interpreter my-shell 'x + 1'   # prints 42\n  cat analysis.py | shells interpreter my-shell -",
    )
    .action(async (id: string, code: string, flags: InterpreterFlags) => {
      const request: InterpreterRequest = {
        code: code === "-" ? await readAll(ctx.io.stdin) : code,
      };
      if (flags.language !== undefined) request.language = flags.language;
      if (flags.timeout !== undefined) request.timeoutMs = flags.timeout;
      const result = await ctx.client().interpreter(id, request);
      ctx.exitCode = result.error ? 1 : 0;
      if (ctx.json) return ctx.printJson(result);
      printTurn(ctx, result);
    });
}
