import type { RuntimeClass, UsageReport, UsageRow } from "@l1fe/shells";
import { useState, type ReactNode } from "react";
import type { Session } from "./session.js";
import { usePoll } from "./use-poll.js";
import { Button, ErrorNote, Panel, Table, Tag } from "./ui.js";

/** Days the page looks back over, today included. */
const DAYS = 14;
const CLASSES: { runtime: RuntimeClass; fill: string; swatch: string }[] = [
  { runtime: "wasm", fill: "fill-sky-500", swatch: "bg-sky-500" },
  { runtime: "container", fill: "fill-emerald-500", swatch: "bg-emerald-500" },
  { runtime: "microvm", fill: "fill-violet-500", swatch: "bg-violet-500" },
];

type Metric = "running" | "cost";
const METRICS: { value: Metric; label: string; of: (row: UsageRow) => number }[] = [
  { value: "running", label: "Running hours", of: (row) => row.seconds.running / 3600 },
  { value: "cost", label: "Cost", of: (row) => Number(row.cost) },
];

/** Midnight UTC `days - 1` days before today: the start of the page's range. */
function rangeStart(days: number): Date {
  const start = new Date();
  start.setUTCHours(0, 0, 0, 0);
  start.setUTCDate(start.getUTCDate() - (days - 1));
  return start;
}

/** Seconds as the largest unit that reads well: `42 s`, `3.5 min`, `2.25 h`. */
function duration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(2)} h`;
}
const megabytes = (bytes: number) => (bytes / 1_000_000).toFixed(1);

/**
 * Usage and cost over the last two weeks: a bar chart by UTC day stacked by isolation class
 * (`/api/v1/usage?groupBy=day,class`), and the shells and actors that used the most.
 */
export function UsagePage({ session }: { session: Session }) {
  const { usage } = session.client;
  const [metric, setMetric] = useState<Metric>("running");
  const report = usePoll(async () => {
    const from = rangeStart(DAYS);
    const [byDay, byShell, byActor] = await Promise.all([
      usage.report({ from, groupBy: ["day", "class"] }),
      usage.report({ from, groupBy: ["shell"], limit: 10 }),
      usage.report({ from, groupBy: ["actor"], limit: 10 }),
    ]);
    return { from, byDay, byShell, byActor };
  }, 10_000);
  const data = report.data;
  const currency = data?.byDay.currency ?? "";
  return (
    <div className="space-y-6">
      <Panel title="Usage, last 14 days">
        <div className="space-y-4 p-4">
          <ErrorNote error={report.error} />
          <div className="flex flex-wrap items-center justify-between gap-4">
            <div className="flex gap-6 text-sm">
              <Figure
                label="Running"
                value={data ? duration(data.byDay.total.seconds.running) : "…"}
              />
              <Figure label="CPU" value={data ? duration(data.byDay.total.cpuSeconds) : "…"} />
              <Figure
                label="Egress"
                value={data ? `${megabytes(data.byDay.total.egressBytes)} MB` : "…"}
              />
              <Figure
                label="Cost"
                value={data ? `${data.byDay.total.cost} ${currency}` : "…"}
                testId="usage-total-cost"
              />
            </div>
            <div
              role="radiogroup"
              aria-label="Chart metric"
              className="inline-flex rounded-md border border-zinc-200 p-0.5 dark:border-zinc-700"
            >
              {METRICS.map((option) => (
                <button
                  key={option.value}
                  type="button"
                  role="radio"
                  aria-checked={metric === option.value}
                  onClick={() => setMetric(option.value)}
                  className={`rounded px-2 py-0.5 text-xs ${
                    metric === option.value
                      ? "bg-zinc-900 text-white dark:bg-zinc-100 dark:text-zinc-900"
                      : "text-zinc-500 hover:text-zinc-900 dark:hover:text-zinc-100"
                  }`}
                >
                  {option.label}
                </button>
              ))}
            </div>
          </div>
          {data && <UsageChart report={data.byDay} from={data.from} metric={metric} />}
          <div className="flex gap-4 text-xs text-zinc-500 dark:text-zinc-400">
            {CLASSES.map(({ runtime, swatch }) => (
              <span key={runtime} className="flex items-center gap-1.5">
                <span className={`size-2.5 rounded-sm ${swatch}`} />
                {runtime}
              </span>
            ))}
            <span className="ml-auto">Days are UTC.</span>
          </div>
        </div>
      </Panel>
      <div className="grid gap-6 lg:grid-cols-2">
        <Panel title="Top shells">
          <UsageTable
            label="Top shells"
            first="Shell"
            rows={data?.byShell.rows}
            name={(row) => <span className="font-mono text-xs">{row.shell}</span>}
            currency={currency}
          />
        </Panel>
        <Panel title="Top users and agents">
          <UsageTable
            label="Top actors"
            first="Actor"
            rows={data?.byActor.rows}
            name={(row) => <Tag>{row.actor ?? "unknown"}</Tag>}
            currency={currency}
          />
        </Panel>
      </div>
      <div className="flex justify-end">
        <Button variant="ghost" onClick={report.refresh}>
          Refresh
        </Button>
      </div>
    </div>
  );
}

function Figure({ label, value, testId }: { label: string; value: string; testId?: string }) {
  return (
    <div>
      <p className="text-xs text-zinc-500 dark:text-zinc-400">{label}</p>
      <p className="font-medium tabular-nums" data-testid={testId}>
        {value}
      </p>
    </div>
  );
}

/** One bar per UTC day, stacked by class; each segment names its day, class and value. */
function UsageChart({ report, from, metric }: { report: UsageReport; from: Date; metric: Metric }) {
  const of = METRICS.find((m) => m.value === metric)?.of ?? (() => 0);
  const days = Array.from({ length: DAYS }, (_, index) => {
    const day = new Date(from);
    day.setUTCDate(day.getUTCDate() + index);
    return day.toISOString().slice(0, 10);
  });
  const valueOf = (day: string, runtime: RuntimeClass) =>
    report.rows
      .filter((row) => row.period?.slice(0, 10) === day && row.runtime === runtime)
      .reduce((sum, row) => sum + of(row), 0);
  const totals = days.map((day) => CLASSES.reduce((sum, c) => sum + valueOf(day, c.runtime), 0));
  const peak = Math.max(...totals, 0);
  const width = 700;
  const height = 180;
  const axis = 18;
  const slot = width / DAYS;
  const scale = peak > 0 ? (height - axis - 6) / peak : 0;
  const unit = metric === "cost" ? report.currency : "h";
  return (
    <svg
      role="img"
      aria-label={`Usage by day and class: ${METRICS.find((m) => m.value === metric)?.label}`}
      viewBox={`0 0 ${width} ${height}`}
      className="h-48 w-full"
      preserveAspectRatio="none"
    >
      <line
        x1={0}
        x2={width}
        y1={height - axis}
        y2={height - axis}
        className="stroke-zinc-200 dark:stroke-zinc-800"
      />
      {days.map((day, index) => {
        let top = height - axis;
        return (
          <g key={day}>
            {CLASSES.map(({ runtime, fill }) => {
              const value = valueOf(day, runtime);
              if (value <= 0) return null;
              const barHeight = Math.max(1, value * scale);
              top -= barHeight;
              return (
                <rect
                  key={runtime}
                  data-day={day}
                  data-class={runtime}
                  data-value={value}
                  x={index * slot + slot * 0.2}
                  y={top}
                  width={slot * 0.6}
                  height={barHeight}
                  rx={2}
                  className={fill}
                >
                  <title>{`${day} · ${runtime}: ${value.toFixed(metric === "cost" ? 4 : 3)} ${unit}`}</title>
                </rect>
              );
            })}
            <text
              x={index * slot + slot / 2}
              y={height - 4}
              textAnchor="middle"
              className="fill-zinc-500 text-[10px]"
            >
              {day.slice(5)}
            </text>
          </g>
        );
      })}
    </svg>
  );
}

function UsageTable({
  label,
  first,
  rows,
  name,
  currency,
}: {
  label: string;
  first: string;
  rows: UsageRow[] | undefined;
  name: (row: UsageRow) => ReactNode;
  currency: string;
}) {
  return (
    <Table
      label={label}
      headers={[first, "Running", "CPU", "Egress MB", `Cost ${currency}`]}
      empty="Nothing metered in this range."
      rows={rows?.map((row) => [
        name(row),
        <span className="tabular-nums">{duration(row.seconds.running)}</span>,
        <span className="tabular-nums">{duration(row.cpuSeconds)}</span>,
        <span className="tabular-nums">{megabytes(row.egressBytes)}</span>,
        <span className="font-medium tabular-nums">{row.cost}</span>,
      ])}
    />
  );
}
