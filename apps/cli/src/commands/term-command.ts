import type { TerminalConnection, TerminalCredential } from "@l1fe/shells";
import { TERM_PROTOCOL, TERM_TOKEN_PROTOCOL_PREFIX } from "@shells/contract";
import type { Command } from "commander";
import type { CliContext, CliIo } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatKeyValues, formatTimeUntil, maskSecret } from "../format.js";
import { processExitCode } from "./exec-command.js";

/** Quiet time after the remote shell's first output that counts as "it has prompted". */
const PROMPT_SETTLE_MS = 200;

interface TermFlags {
  printCredential?: boolean;
  reveal?: boolean;
}

/**
 * The credential as `--print-credential` shows it: the token masked unless revealed. The URL holds
 * no secret; the token goes in the WebSocket subprotocol `shells.token.<token>`.
 */
export function displayedCredential(
  credential: TerminalCredential,
  reveal: boolean,
): { id: string; token: string; url: string; protocols: string; expiresAt: string } {
  const token = reveal ? credential.token : maskSecret(credential.token);
  return {
    id: credential.id,
    token,
    url: credential.url,
    protocols: `${TERM_PROTOCOL}, ${TERM_TOKEN_PROTOCOL_PREFIX}${token}`,
    expiresAt: credential.expiresAt,
  };
}

/**
 * `shells term ID`: attach this terminal to a login shell in the shell, through a freshly minted
 * single-use credential, and exit with the remote shell's exit code. `--print-credential` only
 * mints one and prints it, masked unless `--reveal`.
 */
export function registerTermCommand(program: Command, ctx: CliContext): void {
  program
    .command("term")
    .description("attach this terminal to a login shell inside a shell")
    .argument("<id>", "shell id or name")
    .option("--print-credential", "only mint a terminal credential and print it (token masked)")
    .option("--reveal", "with --print-credential: print the token itself")
    .addHelpText(
      "after",
      [
        "",
        "The credential is single-use and expires after the org's term TTL (default 5 minutes);",
        "the connection ends when it expires, or at once when the key that minted it is revoked or",
        "its holder is offboarded. With a terminal, keys (Ctrl-C too) go to the remote shell and",
        "window size changes follow; piped input is sent once the shell has prompted.",
        "",
        "To attach a printed credential with another client, open its url offering the WebSocket",
        "subprotocols `shells.term.v1, shells.token.<token>`; a token in the URL is refused.",
      ].join("\n"),
    )
    .action(async (id: string, flags: TermFlags) => {
      if (flags.reveal && !flags.printCredential) {
        throw new CliError("usage", "--reveal goes with --print-credential", {
          exitCode: USAGE_EXIT_CODE,
        });
      }
      const credential = await ctx.client().term(id);
      if (flags.printCredential) return printCredential(ctx, credential, flags.reveal === true);
      ctx.exitCode = await attachLocalTerminal(ctx, credential, id);
    });
}

function printCredential(ctx: CliContext, credential: TerminalCredential, reveal: boolean): void {
  const shown = displayedCredential(credential, reveal);
  if (ctx.json) return ctx.printJson(shown);
  ctx.print(
    formatKeyValues([
      ["credential", shown.id],
      ["token", shown.token],
      ["url", shown.url],
      ["protocols", shown.protocols],
      ["expires", `in ${formatTimeUntil(shown.expiresAt, ctx.now())} (${shown.expiresAt})`],
    ]),
  );
  ctx.printErr(
    reveal
      ? "warning: this token attaches a terminal until it expires; it works once and is shown only now."
      : "note: single use; add --reveal to print the token itself.",
  );
}

/** The local terminal's size, when stdout is one. */
function terminalSize(io: CliIo): { cols: number; rows: number } | undefined {
  const { isTTY, columns, rows } = io.stdout;
  return isTTY && columns && rows ? { cols: columns, rows } : undefined;
}

/** Attaches stdin/stdout to the terminal until it ends; answers the exit status to end with. */
async function attachLocalTerminal(
  ctx: CliContext,
  credential: TerminalCredential,
  shellId: string,
): Promise<number> {
  const { io } = ctx;
  const interactive = io.stdin.isTTY === true;
  const term = await credential.attach(terminalSize(io) ?? {});
  const onResize = () => {
    const size = terminalSize(io);
    if (size) term.resize(size.cols, size.rows);
  };
  let rawMode = false;
  let settle: () => void = () => undefined;
  const prompted = new Promise<void>((resolve) => (settle = resolve));
  let settling: ReturnType<typeof setTimeout> | undefined;
  try {
    if (interactive && io.stdin.setRawMode) {
      io.stdin.setRawMode(true);
      rawMode = true;
    }
    io.stdout.on?.("resize", onResize);
    const output = (async () => {
      for await (const bytes of term) {
        io.stdout.write(bytes);
        clearTimeout(settling);
        settling = setTimeout(settle, PROMPT_SETTLE_MS);
      }
    })();
    // A person types after seeing the prompt; piped input waits for it too, because the server
    // starts reading input only once the shell runs, and input sent earlier is lost.
    void forwardInput(io, term, interactive ? Promise.resolve() : prompted, interactive);
    await output;
  } finally {
    clearTimeout(settling);
    io.stdout.off?.("resize", onResize);
    if (rawMode) io.stdin.setRawMode?.(false);
    io.stdin.destroy?.();
  }

  const closed = await term.closed;
  if (closed.exitCode !== null) {
    if (closed.killReason) {
      ctx.printErr(
        `shells: the sandbox killed the shell: ${closed.killReason} (exit code ${closed.exitCode})`,
      );
    }
    return processExitCode(closed.exitCode);
  }
  if (closed.code === 4001) {
    ctx.printErr(
      `shells: the terminal credential expired and the connection ended; attach again with \`shells term ${shellId}\``,
    );
    return 1;
  }
  if (closed.code === 4003) {
    ctx.printErr(
      `shells: ${closed.error?.message ?? "the terminal credential was revoked"}; the connection ended`,
    );
    return 1;
  }
  if (closed.error) throw new CliError(closed.error.code, closed.error.message);
  ctx.printErr(
    `shells: the terminal connection ended (${closed.code}${closed.reason ? `: ${closed.reason}` : ""})`,
  );
  return 1;
}

/**
 * Sends standard input to the terminal once `ready`, until either ends. When piped input ends, the
 * terminal gets Ctrl-D, as a person ending their input at the prompt would type.
 */
async function forwardInput(
  io: CliIo,
  term: TerminalConnection,
  ready: Promise<void>,
  interactive: boolean,
): Promise<void> {
  const ended = term.closed.then(() => "ended" as const);
  if ((await Promise.race([ready.then(() => "ready" as const), ended])) === "ended") return;
  const iterator = io.stdin[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), ended]);
      if (next === "ended") return;
      if (next.done) break;
      term.write(typeof next.value === "string" ? next.value : new Uint8Array(next.value));
    }
    if (!interactive) term.write("\u0004");
  } catch {
    // Standard input was destroyed because the terminal ended.
  }
}
