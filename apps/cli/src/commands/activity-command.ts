import type { ActivityEvent } from "@l1fe/shells";
import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { formatAge, formatTable } from "../format.js";
import { parsePositiveInt } from "../parsers.js";

interface ActivityFlags {
  shell?: string;
  actor?: string;
  action?: string;
  limit: number;
}

/** The largest page the activity route serves. */
const MAX_PAGE = 500;

/** One `shells activity` row. */
export function activityRow(event: ActivityEvent, nowMs: number): string[] {
  return [
    String(event.seq),
    formatAge(event.time, nowMs),
    `${event.actor.type}:${event.actor.id}`,
    event.action,
    event.target ? `${event.target.type}:${event.target.id}` : "-",
    event.outcome,
    event.id,
  ];
}

/** `shells activity`: the org's activity history, newest first. */
export function registerActivityCommand(program: Command, ctx: CliContext): void {
  program
    .command("activity")
    .description("show the activity history, newest first")
    .option("--shell <id>", "only events about this shell")
    .option("--actor <id>", "only events by this actor")
    .option("--action <action>", "only this action, or a prefix ending in . (shell.action.)")
    .option("--limit <count>", "show at most this many events", parsePositiveInt, 50)
    .action(async (flags: ActivityFlags) => {
      const { limit, ...filters } = flags;
      const events: ActivityEvent[] = [];
      for await (const event of ctx
        .client()
        .activity({ ...filters, limit: Math.min(limit, MAX_PAGE) })) {
        events.push(event);
        if (events.length >= limit) break;
      }
      if (ctx.json) return ctx.printJson(events);
      if (events.length === 0) return ctx.printErr("no activity");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["seq", "age", "actor", "action", "target", "outcome", "id"],
          events.map((event) => activityRow(event, now)),
        ),
      );
    });
}
