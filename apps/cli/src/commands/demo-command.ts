import {
  ShellsError,
  type ActivityEvent,
  type RuntimeAvailability,
  type RuntimeClass,
  type ShellsClient,
} from "@l1fe/shells";
import { RuntimeClass as RuntimeClassSchema } from "@shells/contract";
import { Option, type Command } from "commander";
import type { CliContext } from "../context.js";
import { CliError } from "../errors.js";
import { formatTable } from "../format.js";
import { openDemoBinding } from "./demo-binding.js";
import {
  DEMO_WORKLOADS,
  type DemoContext,
  type DemoVerdict,
  type DemoWorkload,
} from "./demo-workloads.js";

/** Demo runs in flight at once: enough to finish in seconds, few enough not to starve a small host. */
const CONCURRENT_RUNS = 4;

/** Audit events the activity excerpt shows: where each run ran, what its proxy decided, how it ended. */
const EXCERPT_ACTIONS = new Set([
  "shell.create",
  "egress.denied",
  "egress.allowed",
  "binding.invoked",
  "binding.denied",
  "run.finish",
]);

/** One row of the demo's table. */
export interface DemoRow {
  workload: DemoWorkload;
  runtime: RuntimeClass;
  runId: string | null;
  verdict: DemoVerdict;
  audit: readonly ActivityEvent[];
}

/**
 * Runs one workload on one class: launch, follow its whole output, wait for the outcome, read the
 * audit, tear down.
 */
async function runWorkload(
  client: ShellsClient,
  workload: DemoWorkload,
  runtime: RuntimeClass,
  context: DemoContext,
): Promise<DemoRow> {
  const variant = workload.variant(runtime, context);
  let runId: string | null = null;
  try {
    const handle = await client.run(variant.spec);
    runId = handle.id;
    try {
      let output = "";
      for await (const frame of handle.stream())
        if ((frame.type === "stdout" || frame.type === "stderr") && typeof frame.data === "string")
          output += frame.data;
      const run = await handle.result();
      const audit = await handle.audit();
      return { workload, runtime, runId, verdict: variant.judge({ run, audit, output }), audit };
    } finally {
      await handle.teardown().catch(() => undefined);
    }
  } catch (error) {
    const reason = error instanceof ShellsError ? `${error.code}: ${error.message}` : String(error);
    return {
      workload,
      runtime,
      runId,
      verdict: { ok: false, how: `could not run: ${reason}` },
      audit: [],
    };
  }
}

/** Runs `work` over `items`, at most `limit` at a time, answering in the items' order. */
async function inPool<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>) {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** What the "contained?" column says about a row. */
function containedCell(row: DemoRow): string {
  if (row.workload.kind === "clean") return row.verdict.ok ? "(clean)" : "FAILED";
  return row.verdict.ok ? "yes" : "NO";
}

/** A detail of an event as text: strings and numbers as they are, anything else as JSON. */
function detail(details: Record<string, unknown>, key: string): string {
  const value = details[key];
  if (value === undefined || value === null) return "-";
  return typeof value === "string" || typeof value === "number"
    ? String(value)
    : JSON.stringify(value);
}

/** One audit event as an excerpt line names it. */
function describeEvent(event: ActivityEvent): string {
  const d = event.details;
  switch (event.action) {
    case "shell.create":
      return `runtime ${detail(d, "runtime")}, network ${detail(d, "network")}`;
    case "egress.denied":
    case "egress.allowed": {
      const count = typeof d["count"] === "number" && d["count"] > 1 ? ` ×${d["count"]}` : "";
      const reason = d["reason"] ? ` ${detail(d, "reason")}` : "";
      return `${detail(d, "host")}:${detail(d, "port")} ${detail(d, "protocol")}${reason}${count}`;
    }
    case "binding.invoked":
    case "binding.denied": {
      const count = typeof d["count"] === "number" && d["count"] > 1 ? ` ×${d["count"]}` : "";
      const outcome = d["reason"] ? detail(d, "reason") : `HTTP ${detail(d, "status")}`;
      return `${detail(d, "method")} ${detail(d, "path")} ${outcome}${count}`;
    }
    case "run.finish": {
      const killed = d["killReason"] ? `, killed: ${detail(d, "killReason")}` : "";
      return `${detail(d, "status")}, exit code ${detail(d, "exitCode")}${killed}`;
    }
    default:
      return "";
  }
}

/** The activity excerpt: the events of every row that say where it ran, what was denied, how it ended. */
export function activityExcerpt(rows: readonly DemoRow[]): string {
  const lines = rows.flatMap((row) =>
    row.audit
      .filter((event) => EXCERPT_ACTIONS.has(event.action))
      .map((event) => [
        event.time.slice(11, 23),
        `${row.workload.id}/${row.runtime}`,
        event.action,
        describeEvent(event),
      ]),
  );
  lines.sort((a, b) => (a[0] as string).localeCompare(b[0] as string));
  return formatTable(["time", "run", "action", "details"], lines);
}

/** The demo's table. */
export function demoTable(rows: readonly DemoRow[]): string {
  return formatTable(
    ["workload", "class", "contained?", "how"],
    rows.map((row) => [row.workload.title, row.runtime, containedCell(row), row.verdict.how]),
  );
}

/** The classes to run the demo on: those the server runs for real (the simulator runs no code). */
async function demoClasses(
  ctx: CliContext,
  asked: RuntimeClass[] | undefined,
): Promise<{ classes: RuntimeClass[]; offers: RuntimeAvailability[]; skipped: string[] }> {
  const { runtimes } = await ctx.client().ready();
  const classes: RuntimeClass[] = [];
  const skipped: string[] = [];
  for (const offer of runtimes) {
    if (asked && !asked.includes(offer.runtime)) continue;
    if (!offer.available)
      skipped.push(`${offer.runtime}: not offered (${offer.reason ?? "unavailable"})`);
    else if (offer.backend === "simulator")
      skipped.push(
        `${offer.runtime}: simulated only (the simulator runs no code, so it contains nothing)`,
      );
    else classes.push(offer.runtime);
  }
  return { classes, offers: runtimes, skipped };
}

/**
 * `shells demo`: the containment story in one command. On every runtime class the server runs,
 * launches hostile workloads (an exfiltration to the metadata IP and a private address, a fork
 * bomb, a memory balloon, code that hunts for its service binding's secret) and one clean run that
 * calls a bound API, then prints who was contained and how — the denied egress decision, the kill
 * reason the control plane recorded, or the secret not found in anything the hunter printed — and
 * an excerpt of the activity history. The binding is the demo's own: a throwaway upstream on this
 * host's loopback and a binding to it with a random secret, deleted when the demo ends. Exits 1 when anything got through (or a clean run did not return its result).
 */
export function registerDemoCommand(program: Command, ctx: CliContext): void {
  program
    .command("demo")
    .description(
      "launch hostile workloads (exfiltration, fork bomb, memory balloon, binding-secret hunt) and a clean run on every class the server runs; show how each was contained",
    )
    .addOption(
      new Option("-r, --runtime <class...>", "only these runtime classes").choices(
        RuntimeClassSchema.options,
      ),
    )
    .addHelpText(
      "after",
      [
        "",
        "Each workload is a one-shot run; the table says whether it was contained and how: the",
        "egress decision the shell's proxy recorded, the kill reason, the wall it hit, or that the",
        "binding's secret was nowhere in what the hunter printed. The binding workloads need a",
        "loopback upstream the demo starts: the server must accept http binding upstreams",
        "(SHELLS_BINDINGS_ALLOW_HTTP=1) and the org must allow 127.0.0.2/32; otherwise they are",
        "skipped, saying why. The exit status is 0 only when every hostile workload was contained",
        "and every clean run returned its result. `npm run demo` starts a throwaway server set up",
        "for all of it and runs this against it.",
        "",
        "Examples:",
        "  shells demo",
        "  shells demo --runtime container",
        "  shells demo --json",
      ].join("\n"),
    )
    .action(async (flags: { runtime?: RuntimeClass[] }) => {
      const { classes, offers, skipped } = await demoClasses(ctx, flags.runtime);
      if (classes.length === 0) {
        throw new CliError(
          "nothing_to_demonstrate",
          `the server runs no runtime class for real${skipped.length ? `: ${skipped.join("; ")}` : ""}`,
          {
            hint: "start a server with real sandboxes (npm start, as root) and run the demo again",
          },
        );
      }
      const lent = await openDemoBinding(ctx.client());
      const binding = "binding" in lent ? lent.binding : null;
      const contextOf = (runtime: RuntimeClass): DemoContext => {
        const offer = offers.find((o) => o.runtime === runtime);
        return {
          binding,
          internet: offer?.networks?.includes("internet") ?? false,
          bindings: offer?.bindings ?? false,
        };
      };
      const notRun = DEMO_WORKLOADS.filter((w) => w.needsBinding && !binding).map((w) => ({
        id: w.id,
        title: w.title,
        reason: "skipped" in lent ? lent.skipped : "",
      }));
      const plan = classes.flatMap((runtime) =>
        DEMO_WORKLOADS.filter((w) => !w.needsBinding || binding).map((workload) => ({
          workload,
          runtime,
        })),
      );
      if (!ctx.json)
        ctx.printErr(
          `shells demo: ${plan.length} runs on ${classes.join(", ")}; this takes seconds`,
        );
      let rows: DemoRow[];
      try {
        rows = await inPool(plan, CONCURRENT_RUNS, ({ workload, runtime }) =>
          runWorkload(ctx.client(), workload, runtime, contextOf(runtime)),
        );
      } finally {
        if ("close" in lent) await lent.close();
      }
      const hostile = rows.filter((row) => row.workload.kind === "hostile");
      const clean = rows.filter((row) => row.workload.kind === "clean");
      const allOk = rows.every((row) => row.verdict.ok);
      ctx.exitCode = allOk ? 0 : 1;
      if (ctx.json) {
        return ctx.printJson({
          classes,
          skipped,
          rows: rows.map((row) => ({
            workload: row.workload.id,
            kind: row.workload.kind,
            runtime: row.runtime,
            runId: row.runId,
            ok: row.verdict.ok,
            how: row.verdict.how,
          })),
          notRun,
          ok: allOk,
        });
      }
      ctx.print(demoTable(rows));
      for (const line of skipped) ctx.print(`skipped ${line}`);
      for (const skipped of notRun) ctx.print(`not run: ${skipped.title}: ${skipped.reason}`);
      ctx.print(`\nactivity (excerpt):\n${activityExcerpt(rows)}`);
      const contained = hostile.filter((row) => row.verdict.ok).length;
      const returned = clean.filter((row) => row.verdict.ok).length;
      ctx.print(
        `\n${contained} of ${hostile.length} hostile runs contained; ${returned} of ${clean.length} clean runs returned their result.${allOk ? "" : " NOT ALL CONTAINED: see the rows marked NO or FAILED."}`,
      );
    });
}
