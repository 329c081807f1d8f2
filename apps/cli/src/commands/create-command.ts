import { Language, NetworkMode, RuntimeClass } from "@shells/contract";
import { isPendingApproval, type ShellCreate } from "@l1fe/shells";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { addGitOptions, gitSourceFrom, type GitFlags } from "./git-flags.js";
import { formatPendingApproval, formatShell } from "../format.js";
import {
  collect,
  parseDurationMs,
  parseEnvPair,
  parsePositiveInt,
  parsePositiveNumber,
} from "../parsers.js";

interface CreateOptions extends GitFlags {
  language?: ShellCreate["language"];
  template?: string;
  runtime?: ShellCreate["runtime"];
  network?: ShellCreate["network"];
  name?: string;
  region?: string;
  project?: string;
  env?: Record<string, string>;
  binding?: string[];
  cpu?: number;
  memory?: number;
  pids?: number;
  disk?: number;
  ttl?: number;
  /** Commander's name for `--no-wait`: false when given. */
  wait: boolean;
}

/** The `POST /shells` body the options describe; unset options are left to the server's defaults. */
export function createBodyFrom(options: CreateOptions): ShellCreate {
  const git = gitSourceFrom(options);
  const resources = {
    ...(options.cpu === undefined ? {} : { cpu: options.cpu }),
    ...(options.memory === undefined ? {} : { memoryMb: options.memory }),
    ...(options.pids === undefined ? {} : { pids: options.pids }),
    ...(options.disk === undefined ? {} : { diskMb: options.disk }),
  };
  return {
    // A template gives the language unless one is named; without either, bash.
    ...(options.language !== undefined
      ? { language: options.language }
      : options.template === undefined
        ? { language: "bash" as const }
        : {}),
    ...(options.template === undefined ? {} : { template: options.template }),
    ...(options.runtime === undefined ? {} : { runtime: options.runtime }),
    ...(options.network === undefined ? {} : { network: options.network }),
    ...(options.name === undefined ? {} : { name: options.name }),
    ...(options.region === undefined ? {} : { region: options.region }),
    ...(options.project === undefined ? {} : { project: options.project }),
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.binding === undefined ? {} : { bindings: options.binding }),
    ...(git === undefined ? {} : { git }),
    ...(Object.keys(resources).length === 0 ? {} : { resources }),
    ...(options.ttl === undefined ? {} : { ttlSeconds: Math.round(options.ttl / 1000) }),
  };
}

/** `shells create`: create a shell and print it once it runs. */
export function registerCreateCommand(program: Command, ctx: CliContext): void {
  const command = program
    .command("create")
    .description("create a shell and wait until it is running")
    .addOption(
      new Option(
        "-l, --language <language>",
        "language preset (default: the template's, else bash)",
      ).choices(Language.options),
    )
    .option(
      "-t, --template <name[@version]>",
      "start from a template: its values are defaults, its locked fields may only be narrowed",
    )
    .addOption(
      new Option("-r, --runtime <class>", "runtime class (default: the org's policy)").choices(
        RuntimeClass.options,
      ),
    )
    .addOption(
      new Option("--network <mode>", "network mode (default: sealed)").choices(NetworkMode.options),
    )
    .option("--name <name>", "name, unique in the project (default: the shell's id)")
    .option("--region <region>", "region to run in")
    .option("--project <project>", "project that owns the shell (default: default)")
    .option(
      "-e, --env <KEY=VALUE>",
      "environment variable of every exec (repeatable)",
      parseEnvPair,
    )
    .option(
      "-b, --binding <name>",
      "service binding the shell may call, via $SHELLS_BINDING_<NAME>_URL (repeatable)",
      collect,
    )
    .option("--cpu <cores>", "CPU cores, may be fractional", parsePositiveNumber)
    .option("--memory <MiB>", "memory limit in MiB", parsePositiveInt)
    .option("--pids <count>", "process limit", parsePositiveInt)
    .option("--disk <MiB>", "writable disk in MiB", parsePositiveInt)
    .option(
      "--ttl <duration>",
      "stop the shell automatically after this long (e.g. 30m, 2h)",
      parseDurationMs,
    )
    .option(
      "--no-wait",
      "answer at once, even while the shell is provisioning (a first create of a language builds its image) or waits for an approver",
    );
  addGitOptions(command, "shell").action(async (options: CreateOptions) => {
    const client = ctx.client();
    const body = createBodyFrom(options);
    // A template marked reviewBindings makes a create with bindings wait for an approver:
    // `--no-wait` prints the pending approval; otherwise the command waits for the decision.
    const answer = options.wait
      ? await client.create(body, {
          onPendingApproval: (pending) =>
            ctx.printErr(formatPendingApproval(pending, ctx.now()) + "\nwaiting for the decision…"),
        })
      : await client.createOrPark(body);
    if (isPendingApproval(answer)) {
      if (ctx.json) ctx.printJson(answer);
      else ctx.print(formatPendingApproval(answer, ctx.now()));
      return;
    }
    let shell = answer;
    if (shell.status === "provisioning" && options.wait) {
      // A first create of a language builds its image (about a minute): say each step on stderr.
      shell = await client.waitUntilRunning(shell.id, {
        onProgress: (reason) => ctx.printErr(`provisioning ${shell.name}: ${reason}`),
      });
    }
    if (ctx.json) ctx.printJson(shell);
    else ctx.print(formatShell(shell, ctx.now()));
  });
}
