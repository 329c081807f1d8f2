import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { parseDurationSeconds, parsePositiveInt } from "../parsers.js";

/**
 * `shells url ID PORT`: a URL that reaches a server listening on PORT inside the shell. Prints
 * only the URL (so `curl "$(shells url ID 8000)"` works); `--json` adds its id and expiry.
 */
export function registerUrlCommand(program: Command, ctx: CliContext): void {
  program
    .command("url")
    .description("print a URL that reaches a server on a port inside a shell (HTTP and WebSocket)")
    .argument("<id>", "shell id or name")
    .argument("<port>", "the port the server listens on inside the shell", parsePositiveInt)
    .option(
      "--ttl <duration>",
      "how long the URL works (default 1h, at most 24h)",
      parseDurationSeconds,
    )
    .action(async (id: string, port: number, flags: { ttl?: number }) => {
      const exposed = await ctx
        .client()
        .url(id, port, flags.ttl === undefined ? {} : { ttlSeconds: flags.ttl });
      if (ctx.json) ctx.printJson(exposed);
      else {
        ctx.print(exposed.url);
        ctx.printErr(`expires ${exposed.expiresAt}; whoever holds the URL reaches port ${port}`);
      }
    });
}
