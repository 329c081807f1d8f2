import { Language, NetworkMode, RuntimeClass } from "@shells/contract";
import type { Run, RunCreate, RunFrame, SeedFile } from "@l1fe/shells";
import { InvalidArgumentError, Option, type Command } from "commander";
import { readFile, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatBytes } from "../format.js";
import { collect, parseDurationMs, parseEnvPair } from "../parsers.js";
import { processExitCode } from "./exec-command.js";
import { addGitOptions, gitSourceFrom, type GitFlags } from "./git-flags.js";

interface RunFlags extends GitFlags {
  language?: RunCreate["language"];
  template?: string;
  code?: string;
  file?: string;
  artifact?: string[];
  fileIn?: { local: string; remote: string }[];
  env?: Record<string, string>;
  network?: RunCreate["network"];
  runtime?: RunCreate["runtime"];
  binding?: string[];
  timeout?: number;
}

/**
 * Parses a repeatable `--file-in LOCAL[:REMOTE]`: a local file seeded into the run's workspace at
 * REMOTE (default: its name in /workspace). The last `:` separates them, so a local path may
 * contain one.
 */
export function parseFileIn(
  value: string,
  previous: { local: string; remote: string }[] = [],
): { local: string; remote: string }[] {
  const colon = value.lastIndexOf(":");
  const local = colon === -1 ? value : value.slice(0, colon);
  const remote = colon === -1 ? basename(value) : value.slice(colon + 1);
  if (local === "" || remote === "") {
    throw new InvalidArgumentError("expected LOCAL[:REMOTE], e.g. ./data.csv:input/data.csv");
  }
  return [...previous, { local, remote }];
}

/** The `POST /runs` body the flags describe, with seeded files read from disk. */
async function runSpecFrom(
  ctx: CliContext,
  command: string[],
  flags: RunFlags,
): Promise<RunCreate> {
  const git = gitSourceFrom(flags);
  const sources = [
    flags.code,
    flags.file,
    command.length > 0 ? command : undefined,
    git?.entrypoint,
  ];
  if (sources.filter((source) => source !== undefined).length !== 1) {
    throw new CliError(
      "usage",
      "give exactly one of --code CODE, --file FILE, --git-entrypoint PATH or -- COMMAND…",
      { exitCode: USAGE_EXIT_CODE },
    );
  }
  const files: SeedFile[] = [];
  for (const { local, remote } of flags.fileIn ?? []) {
    const path = resolve(ctx.io.cwd, local);
    const [bytes, info] = await Promise.all([readFile(path), stat(path)]).catch(() => {
      throw new CliError("file_not_found", `--file-in ${local}: no such file on this machine`);
    });
    files.push({
      path: remote,
      content: bytes.toString("base64"),
      encoding: "base64",
      mode: info.mode & 0o777,
    });
  }
  const code =
    flags.file !== undefined
      ? await readFile(resolve(ctx.io.cwd, flags.file), "utf8").catch(() => {
          throw new CliError(
            "file_not_found",
            `--file ${flags.file}: no such file on this machine`,
          );
        })
      : flags.code;
  if (flags.language === undefined && flags.template === undefined)
    throw new CliError("usage", "name a --language, or a --template that gives one", {
      exitCode: USAGE_EXIT_CODE,
    });
  return {
    ...(flags.language === undefined ? {} : { language: flags.language }),
    ...(flags.template === undefined ? {} : { template: flags.template }),
    ...(code !== undefined ? { code } : command.length > 0 ? { command } : {}),
    ...(git === undefined ? {} : { git }),
    ...(flags.runtime === undefined ? {} : { runtime: flags.runtime }),
    ...(flags.network === undefined ? {} : { network: flags.network }),
    ...(flags.env === undefined ? {} : { env: flags.env }),
    ...(flags.binding === undefined ? {} : { bindings: flags.binding }),
    ...(files.length === 0 ? {} : { files }),
    ...(flags.artifact === undefined ? {} : { artifacts: flags.artifact }),
    ...(flags.timeout === undefined ? {} : { timeoutMs: flags.timeout }),
  };
}

/** Prints one frame as it arrives: output to the matching stream, artifacts noted on stderr. */
function printFrame(ctx: CliContext, frame: RunFrame): void {
  if (ctx.json) return ctx.print(JSON.stringify(frame));
  if ((frame.type === "stdout" || frame.type === "stderr") && typeof frame.data === "string") {
    (frame.type === "stdout" ? ctx.io.stdout : ctx.io.stderr).write(frame.data);
  } else if (frame.type === "artifact") {
    const { path, sizeBytes } = frame.data as { path?: unknown; sizeBytes?: unknown };
    if (typeof path === "string" && typeof sizeBytes === "number") {
      ctx.printErr(`shells: artifact ${path} (${formatBytes(sizeBytes)})`);
    }
  }
}

/** Says on stderr why a run did not simply exit, and answers the exit status to end with. */
export function runExitStatus(ctx: CliContext, run: Run): number {
  if (run.killReason) {
    ctx.printErr(
      `shells: the sandbox killed the run: ${run.killReason} (exit code ${run.exitCode})`,
    );
  }
  if (run.error) ctx.printErr(`shells: the run failed: ${run.error}`);
  return run.exitCode === null ? 1 : processExitCode(run.exitCode);
}

/**
 * `shells run`: a one-shot run in an ephemeral shell. Streams its output live, prints the run (with
 * its structured result and artifacts) as JSON at the end and exits with its exit code.
 */
export function registerRunCommand(program: Command, ctx: CliContext): void {
  const command = program
    .command("run")
    .description("run code or a command once in an ephemeral shell, live, then print its result")
    .argument("[command...]", "the command and its arguments (after --), instead of --code/--file")
    .addOption(
      new Option(
        "-l, --language <language>",
        "language of the sandbox and of --code (required unless --template gives it)",
      ).choices(Language.options),
    )
    .option(
      "-t, --template <name[@version]>",
      "run from a template; one marked review-before-run waits for an approver",
    )
    .option("-c, --code <code>", "source code to run")
    .option("-f, --file <file>", "local file whose contents are the code to run")
    .option("-a, --artifact <glob>", "keep output files matching this glob (repeatable)", collect)
    .option(
      "--file-in <local[:remote]>",
      "seed a local file into the workspace (repeatable)",
      parseFileIn,
    )
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable)", parseEnvPair)
    .addOption(new Option("--network <mode>", "network mode").choices(NetworkMode.options))
    .addOption(new Option("-r, --runtime <class>", "runtime class").choices(RuntimeClass.options))
    .option(
      "-b, --binding <name>",
      "service binding the run may call, via $SHELLS_BINDING_<NAME>_URL (repeatable)",
      collect,
    )
    .option("--timeout <duration>", "wall clock of the whole run, e.g. 30s, 5m", parseDurationMs);
  addGitOptions(command, "run")
    .addHelpText(
      "after",
      [
        "",
        "Examples:",
        `  shells run -l python -c 'print("hi"); shells.result({"ok": True})'`,
        "  shells run -l python -f analyze.py --file-in ./data.csv --artifact 'out/*.png'",
        "  shells run -l python --git-repo https://github.com/acme/tools --git-ref v1.2 --git-entrypoint main.py",
        `  shells run -l bash -- sh -c 'echo hi; echo "{\\"ok\\":true}" > "$SHELLS_RESULT"'`,
      ].join("\n"),
    )
    .action(async (command: string[], flags: RunFlags) => {
      const spec = await runSpecFrom(ctx, command, flags);
      const handle = await ctx.client().run(spec);
      if (handle.pendingApproval) {
        const { approval } = handle.pendingApproval;
        if (ctx.json) ctx.printJson(handle.pendingApproval);
        else
          ctx.printErr(
            `shells: run ${handle.id} waits for review (approval ${approval.id}, expires ${approval.expiresAt}); it starts when an approver runs \`shells approvals grant ${approval.id}\`; follow it with \`shells runs get ${handle.id}\``,
          );
        return;
      }
      if (!ctx.json) ctx.printErr(`shells: run ${handle.id} started`);
      for await (const frame of handle.stream()) printFrame(ctx, frame);
      const run = await handle.result();
      if (ctx.json) ctx.print(JSON.stringify(run));
      else ctx.printJson(run);
      ctx.exitCode = runExitStatus(ctx, run);
    });
}
