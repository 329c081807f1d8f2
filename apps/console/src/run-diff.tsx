import { ShellsError, type Run, type ShellsClient, type WorkspaceDiff } from "@l1fe/shells";
import { useEffect, useState } from "react";
import { inertText } from "./terminal-text.js";
import { ErrorNote } from "./ui.js";

const OMITTED: Record<NonNullable<WorkspaceDiff["files"][number]["omitted"]>, string> = {
  binary: "binary file: sizes and hashes only",
  file_too_large: "over the diff size limit",
  no_starting_copy: "no copy of its starting content was kept",
  diff_too_large: "patch over the per-file limit",
  total_too_large: "past the run's total patch limit",
};

function lineClass(line: string): string {
  if (line.startsWith("+++") || line.startsWith("---")) return "text-zinc-400";
  if (line.startsWith("@@")) return "text-sky-400";
  if (line.startsWith("+")) return "text-emerald-400";
  if (line.startsWith("-")) return "text-red-400";
  return "";
}

const shortHash = (sha: string | null) => (sha ? `${sha.slice(0, 12)}…` : "—");

/**
 * What a finished run changed in /workspace: each text file's unified diff, and sizes and hashes
 * for binaries and files whose patch was left out (with why). Once the run's retention ran out
 * the diff is gone, and the panel says so.
 */
export function RunDiff({ run, client }: { run: Run; client: ShellsClient }) {
  const [diff, setDiff] = useState<WorkspaceDiff | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (run.expiredAt) return;
    let stopped = false;
    client.runs
      .handle(run.id)
      .diff()
      .then(
        (answer) => !stopped && setDiff(answer),
        (caught: unknown) => !stopped && setError(caught),
      );
    return () => {
      stopped = true;
    };
  }, [client, run.id, run.expiredAt]);

  const notTaken = error instanceof ShellsError && error.code === "invalid_state";
  return (
    <div aria-label="Workspace diff">
      <h3 className="mb-1.5 text-sm font-semibold">Workspace diff</h3>
      {run.expiredAt ? (
        <p className="text-sm text-zinc-500 dark:text-zinc-400">
          Removed by retention on {run.expiredAt}; the hashes stay in the run&apos;s history.
        </p>
      ) : notTaken ? (
        <p className="text-sm text-zinc-500 dark:text-zinc-400">Not recorded for this run.</p>
      ) : (
        <ErrorNote error={error} />
      )}
      {diff && diff.files.length === 0 && (
        <p className="text-sm text-zinc-500 dark:text-zinc-400">No files changed in /workspace.</p>
      )}
      <div className="space-y-3" data-testid="run-diff">
        {diff?.files.map((file) => (
          <div
            key={file.path}
            className="overflow-hidden rounded-lg border border-zinc-200 dark:border-zinc-800"
          >
            <div className="flex flex-wrap items-center gap-3 border-b border-zinc-200 px-3 py-1.5 text-xs dark:border-zinc-800">
              <span className="font-semibold">{file.change}</span>
              <span className="font-mono">{inertText(file.path)}</span>
              <span className="text-zinc-500 tabular-nums">
                {file.previousSizeBytes ?? "—"} → {file.sizeBytes ?? "—"} bytes
              </span>
              <span className="font-mono text-zinc-500" title={file.sha256 ?? ""}>
                sha256 {shortHash(file.previousSha256)} → {shortHash(file.sha256)}
              </span>
            </div>
            {file.patch !== null ? (
              <pre className="max-h-96 overflow-auto bg-zinc-950 p-3 font-mono text-xs text-zinc-100">
                {file.patch.split("\n").map((line, i) => (
                  <span key={i} className={`block ${lineClass(line)}`}>
                    {inertText(line) || " "}
                  </span>
                ))}
              </pre>
            ) : (
              <p className="px-3 py-2 text-xs text-zinc-500">
                Diff omitted: {file.omitted ? OMITTED[file.omitted] : "—"}
              </p>
            )}
          </div>
        ))}
        {diff?.truncated && (
          <p className="text-xs text-amber-700 dark:text-amber-300">
            More files than the manifest covers: changes past its limits are not listed.
          </p>
        )}
      </div>
    </div>
  );
}
