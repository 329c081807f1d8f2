import type { UsageDimension, UsageReport, UsageRow } from "@shells/contract";
import type { UsageGroupColumn, UsageSumRow } from "../store/usage-store.js";
import { CostSum, formatMoney, hourlyRate, type StoredRates } from "./usage-rates.js";

/** What a usage report is made of: the summed groups and how to read them. */
export interface UsageReportInput {
  fromMs: number;
  toMs: number;
  groupBy: readonly UsageDimension[];
  limit: number;
  /** The rate card an interval was metered under (`rates_id` null: the defaults). */
  ratesOf(ratesId: number | null): StoredRates;
  /** The currency of the org's current card. */
  currency: string;
}

/** The store columns a report grouped by `groupBy` sums by (class is always summed by). */
export function groupColumns(groupBy: readonly UsageDimension[]): UsageGroupColumn[] {
  return groupBy.filter((d): d is UsageGroupColumn => d !== "class");
}

interface Group {
  keys: Pick<UsageRow, "period" | "runtime" | "project" | "shell" | "actor">;
  ms: Record<"provisioning" | "running" | "stopped" | "error", number>;
  cpuUsec: number;
  memoryMbMs: number;
  egressBytes: number;
  cost: CostSum;
}

function emptyGroup(keys: Group["keys"]): Group {
  return {
    keys,
    ms: { provisioning: 0, running: 0, stopped: 0, error: 0 },
    cpuUsec: 0,
    memoryMbMs: 0,
    egressBytes: 0,
    cost: new CostSum(),
  };
}

function add(group: Group, row: UsageSumRow, ratePerHour: bigint): void {
  const state = row.state as keyof Group["ms"];
  if (state in group.ms) group.ms[state] += row.ms;
  group.cpuUsec += row.cpu_usec;
  group.memoryMbMs += row.memory_mb_ms;
  group.egressBytes += row.egress_bytes;
  group.cost.add(row.ms, ratePerHour);
}

function toRow(group: Group, costMicros: bigint): UsageRow {
  const seconds = (ms: number) => Math.round(ms) / 1000;
  return {
    ...group.keys,
    seconds: {
      provisioning: seconds(group.ms.provisioning),
      running: seconds(group.ms.running),
      stopped: seconds(group.ms.stopped),
      error: seconds(group.ms.error),
    },
    cpuSeconds: Math.round(group.cpuUsec / 1000) / 1000,
    memoryMbSeconds: Math.round(group.memoryMbMs) / 1000,
    egressBytes: Math.round(group.egressBytes),
    cost: formatMoney(costMicros),
  };
}

/**
 * Folds summed intervals into the report's groups, each costed under the rates its time was
 * metered with. Each row's cost is rounded to a micro-unit once; the total is the sum of every
 * group's rounded cost (of groups past `limit` too), so the rows of an export add up to it.
 */
export function foldUsage(rows: readonly UsageSumRow[], input: UsageReportInput): UsageReport {
  const dims = new Set(input.groupBy);
  const groups = new Map<string, Group>();
  for (const row of rows) {
    const keys: Group["keys"] = {
      ...(row.period_ms !== null && (dims.has("hour") || dims.has("day"))
        ? { period: new Date(row.period_ms).toISOString() }
        : {}),
      ...(dims.has("class") ? { runtime: row.runtime as UsageRow["runtime"] } : {}),
      ...(dims.has("project") && row.project !== null ? { project: row.project } : {}),
      ...(dims.has("shell") && row.shell_id !== null ? { shell: row.shell_id } : {}),
      ...(dims.has("actor") ? { actor: row.actor_id } : {}),
    };
    const key = JSON.stringify(keys);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = emptyGroup(keys)));
    add(group, row, hourlyRate(input.ratesOf(row.rates_id), row.runtime, row.state));
  }
  const costed = [...groups.values()].map((group) => ({ group, micros: group.cost.micros }));
  costed.sort(
    (a, b) =>
      (a.group.keys.period ?? "").localeCompare(b.group.keys.period ?? "") ||
      (b.micros > a.micros ? 1 : b.micros < a.micros ? -1 : 0) ||
      JSON.stringify(a.group.keys).localeCompare(JSON.stringify(b.group.keys)),
  );
  const total = emptyGroup({});
  let totalMicros = 0n;
  for (const { group, micros } of costed) {
    for (const state of Object.keys(total.ms) as (keyof Group["ms"])[])
      total.ms[state] += group.ms[state];
    total.cpuUsec += group.cpuUsec;
    total.memoryMbMs += group.memoryMbMs;
    total.egressBytes += group.egressBytes;
    totalMicros += micros;
  }
  return {
    from: new Date(input.fromMs).toISOString(),
    to: new Date(input.toMs).toISOString(),
    groupBy: [...input.groupBy],
    currency: input.currency,
    rows: costed.slice(0, input.limit).map(({ group, micros }) => toRow(group, micros)),
    total: toRow(total, totalMicros),
    truncated: costed.length > input.limit,
  };
}

/** The columns of a CSV export, in order; the grouped dimensions come first. */
const DIMENSION_COLUMNS: Record<
  UsageDimension,
  { header: string; of: (row: UsageRow) => string | null | undefined }
> = {
  hour: { header: "period", of: (row) => row.period },
  day: { header: "period", of: (row) => row.period },
  class: { header: "runtime", of: (row) => row.runtime },
  project: { header: "project", of: (row) => row.project },
  shell: { header: "shell", of: (row) => row.shell },
  actor: { header: "actor", of: (row) => row.actor },
};

/** RFC 4180 field: quoted when it holds a comma, quote or line break; a leading `=+-@` is defused. */
function csvField(value: string | number | null | undefined): string {
  let text = value === null || value === undefined ? "" : String(value);
  // Spreadsheets run a cell that starts with these as a formula (CSV injection).
  if (/^[=+\-@\t\r]/.test(text) && !/^-?\d/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The report as CSV: a header line, one line per row, and a last `total` line when grouped. */
export function usageCsv(report: UsageReport): string {
  const dims = report.groupBy.map((d) => DIMENSION_COLUMNS[d]);
  const header = [
    ...dims.map((d) => d.header),
    "provisioning_seconds",
    "running_seconds",
    "stopped_seconds",
    "error_seconds",
    "cpu_seconds",
    "memory_mb_seconds",
    "egress_bytes",
    "cost",
    "currency",
  ];
  const line = (row: UsageRow, label?: string) =>
    [
      ...dims.map((d, i) => (label !== undefined ? (i === 0 ? label : "") : d.of(row))),
      row.seconds.provisioning,
      row.seconds.running,
      row.seconds.stopped,
      row.seconds.error,
      row.cpuSeconds,
      row.memoryMbSeconds,
      row.egressBytes,
      row.cost,
      report.currency,
    ]
      .map(csvField)
      .join(",");
  const lines = [header.join(","), ...report.rows.map((row) => line(row))];
  // Without dimensions the one row is the total already.
  if (dims.length > 0) lines.push(line(report.total, "total"));
  return `${lines.join("\r\n")}\r\n`;
}
