import { Command } from "commander";
import { registerActionCommand } from "./commands/action-command.js";
import { registerActivityCommand } from "./commands/activity-command.js";
import { registerAgentsCommand } from "./commands/agents-command.js";
import { registerApprovalsCommand } from "./commands/approvals-command.js";
import { registerAuditCommand } from "./commands/audit-command.js";
import { registerBindingsCommand } from "./commands/bindings-command.js";
import { registerTemplatesCommand } from "./commands/templates-command.js";
import { registerCapsCommand } from "./commands/caps-command.js";
import { registerCpCommand } from "./commands/cp-command.js";
import { registerCreateCommand } from "./commands/create-command.js";
import { registerDemoCommand } from "./commands/demo-command.js";
import { registerDoctorCommand } from "./commands/doctor-command.js";
import { registerEntitlementsCommand } from "./commands/entitlements-command.js";
import { registerEvidenceCommand } from "./commands/evidence-command.js";
import { registerExecCommand } from "./commands/exec-command.js";
import { registerFilesCommand } from "./commands/files-command.js";
import { registerForkCommand } from "./commands/fork-command.js";
import { registerGetCommand } from "./commands/get-command.js";
import { registerImagesCommand } from "./commands/images-command.js";
import { registerInterpreterCommand } from "./commands/interpreter-command.js";
import { registerKeysCommand } from "./commands/keys-command.js";
import { registerLsCommand } from "./commands/ls-command.js";
import { registerMembersCommand } from "./commands/members-command.js";
import { registerPolicyCommand } from "./commands/policy-command.js";
import { registerProjectsCommand } from "./commands/projects-command.js";
import { registerRmCommand } from "./commands/rm-command.js";
import { registerRunCommand } from "./commands/run-command.js";
import { registerRunsCommand } from "./commands/runs-command.js";
import { registerRetentionCommand } from "./commands/retention-command.js";
import { registerRuntimesCommand } from "./commands/runtimes-command.js";
import { registerServeCommand } from "./commands/serve-command.js";
import { registerSnapshotsCommand } from "./commands/snapshots-command.js";
import { registerTermCommand } from "./commands/term-command.js";
import { registerWebhooksCommand } from "./commands/webhooks-command.js";
import { registerUsageCommand } from "./commands/usage-command.js";
import { registerUrlCommand } from "./commands/url-command.js";
import { registerWhoamiCommand } from "./commands/whoami-command.js";
import { CliContext, type CliIo, type GlobalOptions } from "./context.js";
import { reportError } from "./errors.js";
import { CLI_VERSION } from "./version.js";

/** Builds the `shells` command tree around a context that carries its output and exit status. */
export function buildProgram(io: CliIo): { program: Command; ctx: CliContext } {
  const program = new Command("shells");
  const ctx = new CliContext(io, () => program.opts<GlobalOptions>());
  program
    .description("Shells: sandboxes for untrusted code, governed.")
    .version(CLI_VERSION)
    .option("--url <url>", "control plane URL (env SHELLS_URL, default http://127.0.0.1:8080)")
    .option("--token <token>", "API key (env SHELLS_API_TOKEN, default <data dir>/admin-token)")
    .option("--data-dir <dir>", "local data directory (env SHELLS_DATA_DIR, default ./.shells)")
    .option("--json", "print the raw JSON of the API's answer")
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      // Usage errors read like every other error: `error: usage: <message>`.
      outputError: (text, write) => write(text.replace(/^error: /, "error: usage: ")),
    })
    .showHelpAfterError("(add --help for usage)")
    .exitOverride();

  registerServeCommand(program, ctx);
  registerCreateCommand(program, ctx);
  registerLsCommand(program, ctx);
  registerGetCommand(program, ctx);
  registerExecCommand(program, ctx);
  registerCpCommand(program, ctx);
  registerFilesCommand(program, ctx);
  registerTermCommand(program, ctx);
  registerInterpreterCommand(program, ctx);
  registerRunCommand(program, ctx);
  registerRunsCommand(program, ctx);
  registerRetentionCommand(program, ctx);
  registerActionCommand(program, ctx);
  registerSnapshotsCommand(program, ctx);
  registerForkCommand(program, ctx);
  registerUrlCommand(program, ctx);
  registerRmCommand(program, ctx);
  registerActivityCommand(program, ctx);
  registerAuditCommand(program, ctx);
  registerEvidenceCommand(program, ctx);
  registerRuntimesCommand(program, ctx);
  registerWhoamiCommand(program, ctx);
  registerMembersCommand(program, ctx);
  registerAgentsCommand(program, ctx);
  registerKeysCommand(program, ctx);
  registerEntitlementsCommand(program, ctx);
  registerProjectsCommand(program, ctx);
  registerPolicyCommand(program, ctx);
  registerBindingsCommand(program, ctx);
  registerTemplatesCommand(program, ctx);
  registerUsageCommand(program, ctx);
  registerCapsCommand(program, ctx);
  registerApprovalsCommand(program, ctx);
  registerWebhooksCommand(program, ctx);
  registerDoctorCommand(program, ctx);
  registerDemoCommand(program, ctx);
  registerImagesCommand(program, ctx);
  return { program, ctx };
}

/**
 * Runs the CLI on `args` (without the node and script paths) and returns the exit status: the
 * command's own (an exec's exit code), 1 for a failed request, 2 for a command line that does not
 * parse.
 */
export async function runCli(args: readonly string[], io: CliIo): Promise<number> {
  const { program, ctx } = buildProgram(io);
  try {
    await program.parseAsync([...args], { from: "user" });
    return ctx.exitCode;
  } catch (error) {
    return reportError(error, (text) => io.stderr.write(text));
  }
}
