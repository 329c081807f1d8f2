import { RuntimeClass, UsageDimension } from "@shells/contract";
import type {
  GovernanceReport,
  RateCard,
  RateCardUpdate,
  UsageReport,
  UsageRow,
} from "@l1fe/shells";
import { InvalidArgumentError, Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { formatBytes, formatKeyValues, formatTable } from "../format.js";
import { parseCommaList, parsePositiveInt } from "../parsers.js";

interface UsageFlags {
  from?: string;
  to?: string;
  project?: string;
  shell?: string;
  actor?: string;
  runtime?: RuntimeClass;
  by?: UsageDimension[];
  limit?: number;
  csv?: boolean;
}

const AGO_UNITS_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A time flag: an ISO date or date-time (`2026-03-01`, `2026-03-01T12:00:00Z`), or a span back
 * from now (`90m`, `24h`, `7d`). Answers an ISO date-time.
 */
export function resolveTime(value: string, nowMs: number): string {
  const ago = /^(\d+)(m|h|d)$/.exec(value.trim());
  if (ago?.[1] && ago[2])
    return new Date(nowMs - Number(ago[1]) * AGO_UNITS_MS[ago[2]]!).toISOString();
  const ms = Date.parse(value);
  if (Number.isNaN(ms))
    throw new InvalidArgumentError(
      `expected an ISO date or time (2026-03-01, 2026-03-01T12:00:00Z) or a span back from now (90m, 24h, 7d), not ${JSON.stringify(value)}.`,
    );
  return new Date(ms).toISOString();
}

function parseDimensions(value: string): UsageDimension[] {
  const dims = parseCommaList(value);
  for (const dim of dims)
    if (!UsageDimension.safeParse(dim).success)
      throw new InvalidArgumentError(
        `expected dimensions among ${UsageDimension.options.join(", ")}.`,
      );
  return dims as UsageDimension[];
}

/** Seconds as `2h05m`, `3m07s` or `12.5s`. */
export function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds * 10) / 10}s`;
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = whole % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s).padStart(2, "0")}s`;
}

/** The table `shells usage` prints: the grouped dimensions, time per state, counters, cost. */
export function formatUsage(report: UsageReport): string {
  const dims = report.groupBy;
  const keyOf = (row: UsageRow, dim: UsageDimension): string => {
    if (dim === "hour") return row.period?.slice(0, 13).replace("T", " ") ?? "";
    if (dim === "day") return row.period?.slice(0, 10) ?? "";
    if (dim === "class") return row.runtime ?? "";
    if (dim === "project") return row.project ?? "";
    if (dim === "shell") return row.shell ?? "";
    return row.actor ?? "-";
  };
  const cells = (row: UsageRow, keys: string[]) => [
    ...keys,
    formatSeconds(row.seconds.running),
    formatSeconds(row.seconds.stopped),
    formatSeconds(row.seconds.provisioning + row.seconds.error),
    formatSeconds(row.cpuSeconds),
    `${Math.round(row.memoryMbSeconds / 3600)}`,
    formatBytes(row.egressBytes),
    `${row.cost} ${report.currency}`,
  ];
  const headers = [
    ...dims.map((d) => (d === "class" ? "runtime" : d)),
    "running",
    "stopped",
    "other",
    "cpu",
    "mb-hours",
    "egress",
    "cost",
  ];
  const rows = report.rows.map((row) =>
    cells(
      row,
      dims.map((d) => keyOf(row, d)),
    ),
  );
  if (dims.length > 0)
    rows.push(
      cells(
        report.total,
        dims.map((_, i) => (i === 0 ? "total" : "")),
      ),
    );
  const lines = [
    `usage from ${report.from} to ${report.to}`,
    formatTable(headers, rows.length > 0 ? rows : [cells(report.total, [])]),
  ];
  if (report.truncated) lines.push(`(more rows matched; the total counts them all; raise --limit)`);
  return lines.join("\n");
}

/** The org's rate card as `shells rates` prints it. */
export function formatRates(card: RateCard): string {
  return [
    formatTable(
      ["runtime", "running per hour", "stopped per hour"],
      RuntimeClass.options.map((runtime) => [
        runtime,
        `${card.classes[runtime].runningPerHour} ${card.currency}`,
        `${card.classes[runtime].stoppedPerHour} ${card.currency}`,
      ]),
    ),
    formatKeyValues([["effective", card.effectiveAt ?? "server defaults"]]),
  ].join("\n");
}

/** Governance metrics as `shells governance` prints them. */
export function formatGovernance(report: GovernanceReport): string {
  const { shells, runs, denials, approvals } = report;
  const waits = approvals.timeToDecisionSeconds;
  return formatKeyValues([
    ["scope", report.project ? `project ${report.project}` : "the whole org"],
    ["range", `${report.from} to ${report.to}`],
    [
      "shells now",
      `${shells.running} running, ${shells.provisioning} provisioning, ${shells.stopped} stopped, ${shells.error} error`,
    ],
    [
      "runs",
      `${runs.active} active now; ${runs.started} started: ${runs.succeeded} succeeded, ${runs.failed} failed, ${runs.cancelled} cancelled`,
    ],
    [
      "denials",
      `${denials.total}${denials.byKind.length > 0 ? `: ${denials.byKind.map((k) => `${k.kind} ${k.count}`).join(", ")}` : ""}`,
    ],
    [
      "approvals",
      `${approvals.requested} requested: ${approvals.granted} granted, ${approvals.denied} denied, ${approvals.expired} expired, ${approvals.withdrawn} withdrawn, ${approvals.pending} pending`,
    ],
    [
      "time to decision",
      waits
        ? `p50 ${formatSeconds(waits.p50)}, p90 ${formatSeconds(waits.p90)}, max ${formatSeconds(waits.max)}`
        : "-",
    ],
  ]);
}

/** `container.running=0.05` → the rate card change it names. */
export function parseRate(value: string, previous: RateCardUpdate = {}): RateCardUpdate {
  const match = /^(wasm|container|microvm)\.(running|stopped)=(\d{1,12}(?:\.\d{1,6})?)$/.exec(
    value,
  );
  if (!match) {
    throw new InvalidArgumentError(
      "expected CLASS.STATE=AMOUNT, e.g. container.running=0.05 (CLASS wasm|container|microvm, STATE running|stopped, AMOUNT per hour with at most 6 decimals).",
    );
  }
  const [, runtime, state, amount] = match as unknown as [string, RuntimeClass, string, string];
  const field = state === "running" ? "runningPerHour" : "stoppedPerHour";
  return {
    ...previous,
    classes: {
      ...previous.classes,
      [runtime]: { ...previous.classes?.[runtime], [field]: amount },
    },
  };
}

/** `shells usage`, `shells governance` and `shells rates`: what the org's shells used and cost. */
export function registerUsageCommand(program: Command, ctx: CliContext): void {
  program
    .command("usage")
    .description("show metered usage and cost (seconds per state, CPU, memory, egress)")
    .option(
      "--from <time>",
      "start: ISO date/time or a span back from now (7d, 24h); default: this month",
    )
    .option("--to <time>", "end: ISO date/time or a span back from now; default: now")
    .option("--project <name>", "only shells of this project")
    .option("--shell <id>", "only this shell")
    .option("--actor <id>", "only shells created by this user or agent")
    .addOption(
      new Option("--runtime <class>", "only this runtime class").choices(RuntimeClass.options),
    )
    .option(
      "--by <dims>",
      `group rows by ${UsageDimension.options.join(", ")} (comma-separated, e.g. day,class)`,
      parseDimensions,
    )
    .option("--limit <rows>", "most rows (default 1000)", parsePositiveInt)
    .option("--csv", "print CSV (a header line, one line per row, a total line)")
    .action(async (flags: UsageFlags) => {
      const now = ctx.now();
      const query = {
        from: flags.from === undefined ? undefined : resolveTime(flags.from, now),
        to: flags.to === undefined ? undefined : resolveTime(flags.to, now),
        project: flags.project,
        shell: flags.shell,
        actor: flags.actor,
        runtime: flags.runtime,
        groupBy: flags.by,
        limit: flags.limit,
      };
      const usage = ctx.client().usage;
      if (flags.csv) {
        ctx.io.stdout.write(await usage.csv(query));
        return;
      }
      const report = await usage.report(query);
      if (ctx.json) ctx.printJson(report);
      else ctx.print(formatUsage(report));
    });

  program
    .command("governance")
    .description(
      "show governance metrics: shells and runs active now, denials by kind, approvals and time to decision",
    )
    .option("--project <name>", "only this project (a team); default: the whole org")
    .option(
      "--from <time>",
      "start: ISO date/time or a span back from now (7d); default: this month",
    )
    .option("--to <time>", "end: ISO date/time or a span back from now; default: now")
    .action(async (flags: { project?: string; from?: string; to?: string }) => {
      const now = ctx.now();
      const report = await ctx.client().usage.governance({
        project: flags.project,
        from: flags.from === undefined ? undefined : resolveTime(flags.from, now),
        to: flags.to === undefined ? undefined : resolveTime(flags.to, now),
      });
      if (ctx.json) ctx.printJson(report);
      else ctx.print(formatGovernance(report));
    });

  const rates = program
    .command("rates")
    .description("show or change the org's rates per runtime class (changes need the admin role)");
  rates
    .command("get", { isDefault: true })
    .alias("show")
    .description("show the org's rates")
    .action(async () => {
      const card = await ctx.client().usage.rates();
      if (ctx.json) ctx.printJson(card);
      else ctx.print(formatRates(card));
    });
  rates
    .command("set")
    .description("change rates from now on; time already metered keeps its rates")
    .argument("[rates...]", "CLASS.STATE=AMOUNT per hour, e.g. container.running=0.05")
    .option("--currency <code>", "ISO 4217 code the amounts are in (a label, never converted)")
    .action(async (specs: string[], flags: { currency?: string }) => {
      let update: RateCardUpdate = flags.currency ? { currency: flags.currency } : {};
      for (const spec of specs) update = parseRate(spec, update);
      if (!update.currency && !update.classes)
        throw new InvalidArgumentError("name at least one rate or --currency.");
      const card = await ctx.client().usage.updateRates(update);
      if (ctx.json) ctx.printJson(card);
      else ctx.print(formatRates(card));
    });
}
