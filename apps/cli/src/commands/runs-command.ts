import { RunReviewVerdict } from "@shells/contract";
import type { Run, RunReviewVerdict as RunReviewVerdictType, WorkspaceDiff } from "@l1fe/shells";
import { Option, type Command } from "commander";
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { CliContext } from "../context.js";
import { formatAge, formatBytes, formatKeyValues, formatTable } from "../format.js";
import { parsePositiveInt } from "../parsers.js";

/** One `shells runs ls` row. */
export function runRow(run: Run, nowMs: number): string[] {
  return [
    run.id,
    run.status,
    run.language,
    run.exitCode === null ? "-" : String(run.exitCode),
    formatAge(run.createdAt, nowMs),
  ];
}

/** Everything about one run, as `shells runs get` prints it. */
export function formatRun(run: Run, nowMs: number): string {
  const pairs: [string, string][] = [
    ["id", run.id],
    ["status", run.status],
    ["language", run.language],
    ["runtime", run.runtime],
    ["shell", run.shellId],
    ["exit code", run.exitCode === null ? "-" : String(run.exitCode)],
  ];
  if (run.killReason) pairs.push(["killed", run.killReason]);
  if (run.error) pairs.push(["error", run.error]);
  pairs.push(["result", run.result === null ? "-" : JSON.stringify(run.result)]);
  pairs.push([
    "artifacts",
    run.artifacts.length === 0
      ? "-"
      : run.artifacts.map((a) => `${a.path} (${formatBytes(a.sizeBytes)})`).join(", "),
  ]);
  if (run.skippedArtifacts && run.skippedArtifacts.length > 0)
    pairs.push([
      "not kept",
      run.skippedArtifacts
        .map((a) => `${a.path} (${formatBytes(a.sizeBytes)}: ${a.reason})`)
        .join(", "),
    ]);
  pairs.push(["created", `${run.createdAt} (${formatAge(run.createdAt, nowMs)} ago)`]);
  if (run.finishedAt) pairs.push(["finished", run.finishedAt]);
  if (run.review)
    pairs.push([
      "review",
      `${run.review.verdict} by ${run.review.reviewedBy} at ${run.review.createdAt}: ${run.review.comment}`,
    ]);
  if (run.expiredAt)
    pairs.push(["expired", `${run.expiredAt} (artifacts, changes and diff removed by retention)`]);
  const sections = [formatKeyValues(pairs)];
  for (const stream of ["stdout", "stderr"] as const) {
    const text = run.output?.[stream];
    if (!run.output || !text) continue;
    const total = run.output[`${stream}Bytes`];
    const shown = Buffer.byteLength(text);
    sections.push(
      `--- ${stream}${shown < total ? ` (the last ${formatBytes(shown)} of ${formatBytes(total)})` : ""} ---\n${text.replace(/\n$/, "")}`,
    );
  }
  return sections.join("\n");
}

const OMITTED: Record<NonNullable<WorkspaceDiff["files"][number]["omitted"]>, string> = {
  binary: "binary file",
  file_too_large: "file over the diff size limit",
  no_starting_copy: "no copy of its starting content was kept (over the run's text budget)",
  diff_too_large: "patch over the per-file limit",
  total_too_large: "past the run's total patch limit",
};

/**
 * A run's workspace diff as `shells runs diff` prints it: each text file's unified diff, and for
 * a file without one a `Binary files …`-style line with its sizes, hashes and why.
 */
export function formatDiff(diff: WorkspaceDiff): string {
  if (diff.files.length === 0) return "no files changed in /workspace";
  const parts = diff.files.map((file) => {
    if (file.patch !== null) return file.patch.replace(/\n$/, "");
    const side = (size: number | null, sha: string | null) =>
      size === null ? "none" : `${formatBytes(size)}${sha ? ` sha256 ${sha}` : ""}`;
    return [
      `--- ${file.change === "added" ? "/dev/null" : `a/${file.path}`}`,
      `+++ ${file.change === "removed" ? "/dev/null" : `b/${file.path}`}`,
      `# ${file.change} ${file.kind} file, diff omitted: ${file.omitted ? OMITTED[file.omitted] : "-"}`,
      `#   before: ${side(file.previousSizeBytes, file.previousSha256)}`,
      `#   after:  ${side(file.sizeBytes, file.sha256)}`,
    ].join("\n");
  });
  if (diff.truncated)
    parts.push("# (more files than the manifest covers: changes past its limits are not listed)");
  return parts.join("\n");
}

/** `shells runs ls|get|result|artifact|changes|diff|review|rm`: one-shot runs (start one with `shells run`). */
export function registerRunsCommand(program: Command, ctx: CliContext): void {
  const runs = program.command("runs").description("list, inspect and tear down one-shot runs");

  runs
    .command("ls")
    .alias("list")
    .description("the org's newest runs")
    .option("--limit <count>", "how many (1-200, default 50)", parsePositiveInt)
    .action(async (flags: { limit?: number }) => {
      const items = await ctx.client().runs.list({ limit: flags.limit });
      if (ctx.json) return ctx.printJson(items);
      if (items.length === 0) return ctx.printErr("no runs");
      const now = ctx.now();
      ctx.print(
        formatTable(
          ["id", "status", "language", "exit", "age"],
          items.map((run) => runRow(run, now)),
        ),
      );
    });

  runs
    .command("get")
    .description("one run as it stands now")
    .argument("<id>", "run id")
    .action(async (id: string) => {
      const run = await ctx.client().runs.get(id);
      if (ctx.json) ctx.printJson(run);
      else ctx.print(formatRun(run, ctx.now()));
    });

  runs
    .command("result")
    .description("wait until a run has ended and print it as JSON (with its structured result)")
    .argument("<id>", "run id")
    .action(async (id: string) => {
      ctx.printJson(await ctx.client().runs.handle(id).result());
    });

  runs
    .command("artifact")
    .description("download one of a run's artifacts (to stdout, or -o FILE)")
    .argument("<id>", "run id")
    .argument("<path>", "the artifact's path, as `shells runs get` lists it")
    .option("-o, --output <file>", "write it to this file instead of stdout")
    .action(async (id: string, path: string, flags: { output?: string }) => {
      const bytes = await ctx.client().runs.handle(id).artifact(path);
      if (flags.output === undefined) {
        ctx.io.stdout.write(bytes);
        return;
      }
      const target = resolve(ctx.io.cwd, flags.output);
      await writeFile(target, bytes);
      ctx.printErr(`wrote ${formatBytes(bytes.length)} to ${target}`);
    });

  runs
    .command("changes")
    .description("what a finished run changed in /workspace: files added, removed, modified")
    .argument("<id>", "run id")
    .action(async (id: string) => {
      const { changes, truncated } = await ctx.client().runs.handle(id).changes();
      if (ctx.json) return ctx.printJson({ changes, truncated });
      const mark = { added: "+", removed: "-", modified: "~" } as const;
      ctx.print(
        [
          ...(changes.length === 0 ? ["no files changed in /workspace"] : []),
          ...changes.map(
            (c) =>
              `${mark[c.change]} ${c.path}  ${c.change === "removed" ? formatBytes(c.previousSizeBytes ?? 0) : formatBytes(c.sizeBytes ?? 0)}${c.sha256 ? `  sha256 ${c.sha256.slice(0, 16)}…` : ""}`,
          ),
          ...(truncated
            ? ["(more files than the manifest covers: changes past its limits are not listed)"]
            : []),
        ].join("\n"),
      );
    });

  runs
    .command("diff")
    .description(
      "what a finished run changed in /workspace: unified diffs of text files, sizes and SHA-256 of binaries",
    )
    .argument("<id>", "run id")
    .action(async (id: string) => {
      const diff = await ctx.client().runs.handle(id).diff();
      if (ctx.json) ctx.printJson(diff);
      else ctx.print(formatDiff(diff));
    });

  runs
    .command("review")
    .description(
      "review a finished run: a verdict and a comment (listed approvers only, never your own run)",
    )
    .argument("<id>", "run id")
    .addOption(
      new Option("--verdict <verdict>", "the verdict")
        .choices(RunReviewVerdict.options)
        .makeOptionMandatory(),
    )
    .requiredOption("--comment <text>", "why (recorded in the run's history and evidence)")
    .action(async (id: string, flags: { verdict: RunReviewVerdictType; comment: string }) => {
      const review = await ctx
        .client()
        .runs.review(id, { verdict: flags.verdict, comment: flags.comment });
      if (ctx.json) ctx.printJson(review);
      else ctx.print(`reviewed ${id}: ${review.verdict} (${review.id})`);
    });

  runs
    .command("rm")
    .alias("teardown")
    .description("tear a run down: cancel it if running, reclaim its shell (records stay)")
    .argument("<id>", "run id")
    .action(async (id: string) => {
      const run = await ctx.client().runs.handle(id).teardown();
      if (ctx.json) ctx.printJson(run);
      else ctx.print(`tore down ${run.id} (${run.status})`);
    });
}
