import type { RunRetention } from "@l1fe/shells";
import { InvalidArgumentError, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatKeyValues } from "../format.js";

/** Days as `shells retention set` takes them: a number of days (fractions allowed), or `default`. */
export function parseRetentionDays(value: string): number | null {
  if (value === "default") return null;
  const days = Number(value);
  if (value.trim() === "" || !Number.isFinite(days) || days < 0 || days > 36_500)
    throw new InvalidArgumentError(
      `expected days from 0 to 36500 (e.g. 30, 0.5), or "default" (got ${value}).`,
    );
  return days;
}

/** A retention setting as `shells retention` prints it. */
export function formatRetention(retention: RunRetention): string {
  return formatKeyValues([
    ["level", retention.project === null ? "org" : `project ${retention.project}`],
    [
      "days",
      retention.days === null
        ? `- (${retention.project === null ? "the server's default" : "the org's"})`
        : String(retention.days),
    ],
    ["in effect", `${retention.effectiveDays} days`],
    [
      "updated",
      retention.updatedAt
        ? `${retention.updatedAt} by ${retention.updatedBy?.type ?? "?"} ${retention.updatedBy?.id ?? "?"}`
        : "-",
    ],
  ]);
}

/**
 * `shells retention [get|set DAYS] [--project NAME]`: how long runs keep their artifacts,
 * workspace changes and diffs after they end (changes need the admin role).
 */
export function registerRetentionCommand(program: Command, ctx: CliContext): void {
  const retention = program
    .command("retention")
    .description(
      "how long runs keep their artifacts, workspace changes and diffs, per org or project (changes need the admin role)",
    );
  const show = async (flags: { project?: string }) => {
    const client = ctx.client();
    const answer =
      flags.project === undefined
        ? await client.policy.getRetention()
        : await client.projects.getRetention(flags.project);
    if (ctx.json) ctx.printJson(answer);
    else ctx.print(formatRetention(answer));
  };
  retention
    .command("get", { isDefault: true })
    .description("the setting of the org, or of one project, and the days in effect")
    .option("--project <name>", "a project's setting instead of the org's")
    .action(show);
  retention
    .command("set")
    .description(
      'set the days runs keep what they kept after they end; "default" removes the setting',
    )
    .argument(
      "<days>",
      'days (fractions allowed; 0: until the next sweep), or "default"',
      parseRetentionDays,
    )
    .option("--project <name>", "set a project's instead of the org's")
    .action(async (days: number | null, flags: { project?: string }) => {
      const client = ctx.client();
      const answer =
        flags.project === undefined
          ? await client.policy.setRetention(days)
          : await client.projects.setRetention(flags.project, days);
      if (ctx.json) ctx.printJson(answer);
      else ctx.print(formatRetention(answer));
    });
}
