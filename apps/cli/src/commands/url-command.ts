import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError, USAGE_EXIT_CODE } from "../errors.js";
import { formatAge, formatTable } from "../format.js";
import { parseDurationSeconds, parsePositiveInt } from "../parsers.js";

/**
 * `shells url ID PORT`: a URL that reaches a server listening on PORT inside the shell. Prints
 * only the URL (so `curl "$(shells url ID 8000)"` works); `--json` adds its id and expiry.
 * `shells url ID --list` lists the URLs that still work (never the URLs themselves: their paths are
 * tokens, answered once); `shells url ID --revoke URL_ID` ends one before it expires.
 */
export function registerUrlCommand(program: Command, ctx: CliContext): void {
  program
    .command("url")
    .description(
      "print a URL that reaches a server on a port inside a shell (HTTP and WebSocket); list or revoke the shell's URLs",
    )
    .argument("<id>", "shell id or name")
    .argument("[port]", "the port the server listens on inside the shell", parsePositiveInt)
    .option(
      "--ttl <duration>",
      "how long the URL works (default 1h, at most 24h)",
      parseDurationSeconds,
    )
    .option("--list", "list the shell's URLs that still work (id, port, maker, expiry)")
    .option("--revoke <urlId>", "revoke the URL with this id (from --list) before it expires")
    .action(
      async (
        id: string,
        port: number | undefined,
        flags: { ttl?: number; list?: boolean; revoke?: string },
      ) => {
        const client = ctx.client();
        const modes = [port !== undefined, flags.list === true, flags.revoke !== undefined];
        if (modes.filter(Boolean).length !== 1)
          throw new CliError("usage", "give a PORT, or --list, or --revoke URL_ID (one of them)", {
            exitCode: USAGE_EXIT_CODE,
          });
        if (flags.list) {
          const urls = await client.urls(id);
          if (ctx.json) return ctx.printJson(urls);
          if (urls.length === 0) return ctx.printErr("no port URL works for this shell now");
          const now = ctx.now();
          return ctx.print(
            formatTable(
              ["id", "port", "by", "made", "expires"],
              urls.map((url) => [
                url.id,
                String(url.port),
                `${url.createdBy.type}:${url.createdBy.id}`,
                formatAge(url.createdAt, now),
                url.expiresAt,
              ]),
            ),
          );
        }
        if (flags.revoke !== undefined) {
          const revoked = await client.revokeUrl(id, flags.revoke);
          if (ctx.json) return ctx.printJson(revoked);
          return ctx.print(`revoked ${revoked.id} (port ${revoked.port})`);
        }
        const exposed = await client.url(
          id,
          port!,
          flags.ttl === undefined ? {} : { ttlSeconds: flags.ttl },
        );
        if (ctx.json) ctx.printJson(exposed);
        else {
          ctx.print(exposed.url);
          ctx.printErr(`expires ${exposed.expiresAt}; whoever holds the URL reaches port ${port}`);
        }
      },
    );
}
