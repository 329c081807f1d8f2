import { RuntimeClass } from "@shells/contract";
import type { Cap, CapStatus } from "@l1fe/shells";
import { InvalidArgumentError, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatTable } from "../format.js";
import { parseDurationSeconds } from "../parsers.js";

const METRICS: Record<string, Cap["metric"]> = {
  concurrent: "concurrent_shells",
  concurrent_shells: "concurrent_shells",
  running: "running_seconds",
  running_seconds: "running_seconds",
  cost: "cost",
};

const CAP_SYNTAX =
  "expected METRIC[/PERIOD][@CLASS]=LIMIT: concurrent=10, running/day=8h, cost/month=25.00, running/day@microvm=3600 (PERIOD day|month, CLASS wasm|container|microvm).";

/**
 * One cap from its command-line form: `concurrent=10`, `running/day=8h` (a duration or seconds),
 * `cost/month=25.00` (in the rate card's currency), each optionally `@CLASS`.
 */
export function parseCap(value: string): Cap {
  const match = /^([a-z_]+)(?:\/(day|month))?(?:@([a-z]+))?=(.+)$/.exec(value.trim());
  const metric = METRICS[match?.[1] ?? ""];
  if (!match || !metric) throw new InvalidArgumentError(CAP_SYNTAX);
  const [, , periodName, runtimeName, limit = ""] = match;
  const period = periodName as "day" | "month" | undefined;
  const runtime = runtimeName === undefined ? undefined : RuntimeClass.safeParse(runtimeName);
  if (runtime && !runtime.success) throw new InvalidArgumentError(CAP_SYNTAX);
  const scope = runtime?.success ? { runtime: runtime.data } : {};
  if (metric === "concurrent_shells") {
    if (period || !/^\d+$/.test(limit)) throw new InvalidArgumentError(CAP_SYNTAX);
    return { metric, limit: Number(limit), ...scope };
  }
  if (!period) throw new InvalidArgumentError(`${metric} needs a period: ${CAP_SYNTAX}`);
  if (metric === "running_seconds")
    return { metric, period, limit: limit === "0" ? 0 : parseDurationSeconds(limit), ...scope };
  if (!/^\d{1,12}(\.\d{1,6})?$/.test(limit)) throw new InvalidArgumentError(CAP_SYNTAX);
  return { metric, period, limit, ...scope };
}

/** A cap as `shells caps` lists it: `running/day@wasm`. */
function capName(cap: Cap): string {
  const metric =
    cap.metric === "concurrent_shells"
      ? "concurrent"
      : cap.metric === "running_seconds"
        ? "running"
        : "cost";
  return `${metric}${"period" in cap ? `/${cap.period}` : ""}${cap.runtime ? `@${cap.runtime}` : ""}`;
}

/** The table `shells caps` prints. */
export function formatCaps(items: readonly CapStatus[]): string {
  return formatTable(
    ["project", "cap", "used", "limit", "percent", "state", "period ends"],
    items.map((status) => [
      status.project,
      capName(status.cap),
      String(status.used),
      String(status.cap.limit),
      `${status.percent}%`,
      status.state,
      status.periodEnd ?? "-",
    ]),
  );
}

/** `shells caps ls|set|clear`: per-project caps (changes need the admin role). */
export function registerCapsCommand(program: Command, ctx: CliContext): void {
  const caps = program
    .command("caps")
    .description(
      "show or set per-project caps: concurrent shells, running time or cost per day or month",
    );
  caps
    .command("ls", { isDefault: true })
    .alias("list")
    .description("list caps with their use now")
    .option("--project <name>", "only this project's caps")
    .action(async (flags: { project?: string }) => {
      const items = await ctx.client().caps.list({ project: flags.project });
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no caps");
      ctx.print(formatCaps(items));
    });
  caps
    .command("set")
    .description("replace a project's caps (admins); creates and starts over a cap are refused")
    .argument("<project>", "the project's name")
    .argument(
      "<caps...>",
      "METRIC[/PERIOD][@CLASS]=LIMIT, e.g. concurrent=10 running/day=8h cost/month=25",
    )
    .action(async (project: string, specs: string[]) => {
      const items = await ctx.client().caps.set(project, specs.map(parseCap));
      if (ctx.json) ctx.printJson(items);
      else ctx.print(formatCaps(items));
    });
  caps
    .command("clear")
    .description("remove every cap of a project (admins)")
    .argument("<project>", "the project's name")
    .action(async (project: string) => {
      const items = await ctx.client().caps.set(project, []);
      if (ctx.json) ctx.printJson(items);
      else ctx.print(`removed the caps of project ${project}`);
    });
}
