import {
  WORKSPACE_DIFF_LIMITS,
  type WorkspaceChanges,
  type WorkspaceDiff,
  type WorkspaceFileDiff,
} from "@shells/contract";
import { createTwoFilesPatch, FILE_HEADERS_ONLY, formatPatch } from "diff";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { TextCopy, WorkspaceManifest } from "./workspace-changes.js";

/**
 * Time one file's diff may take, and one run's diffs all together: the diff runs on the event
 * loop, and past these a pathological pair of files is omitted (`diff_too_large`) instead of
 * stalling other work.
 */
const DIFF_TIMEOUT_MS = { perFile: 500, perRun: 5000 };

/** A side a manifest does not hold (it changed between the listing and the read). */
const absent: TextCopy = { omitted: "no_starting_copy" };

/**
 * The patch of a file added or removed whole: every line on one side. Built directly (the diff
 * algorithm has nothing to find) and formatted by the diff library like any other patch.
 */
function wholeFilePatch(path: string, change: "added" | "removed", text: string): string {
  const lines = text.split("\n");
  const endsWithNewline = lines.at(-1) === "";
  if (endsWithNewline) lines.pop();
  const sign = change === "added" ? "+" : "-";
  const body = lines.map((line) => sign + line);
  if (!endsWithNewline && text !== "") body.push("\\ No newline at end of file");
  return formatPatch(
    {
      oldFileName: change === "added" ? "/dev/null" : `a/${path}`,
      newFileName: change === "removed" ? "/dev/null" : `b/${path}`,
      oldHeader: undefined,
      newHeader: undefined,
      hunks:
        lines.length === 0
          ? []
          : [
              {
                oldStart: 1,
                oldLines: change === "removed" ? lines.length : 0,
                newStart: 1,
                newLines: change === "added" ? lines.length : 0,
                lines: body,
              },
            ],
    },
    FILE_HEADERS_ONLY,
  );
}

/** A unified diff of a modified text file, or null when computing it ran past `timeoutMs`. */
function modifiedPatch(path: string, was: string, now: string, timeoutMs: number): string | null {
  return (
    createTwoFilesPatch(`a/${path}`, `b/${path}`, was, now, undefined, undefined, {
      context: 3,
      timeout: timeoutMs,
      headerOptions: FILE_HEADERS_ONLY,
    }) ?? null
  );
}

/**
 * The workspace diff of a run from the manifests taken as it started and as it ended, for the
 * files `changes` lists: a unified diff where every side that exists is text kept by its manifest,
 * else an entry with sizes and hashes and the reason the patch is left out. Patches are kept
 * within `WORKSPACE_DIFF_LIMITS` per file and in all, so what a run stores is bounded.
 */
export async function workspaceDiff(
  before: WorkspaceManifest,
  after: WorkspaceManifest,
  changes: WorkspaceChanges,
): Promise<WorkspaceDiff> {
  const files: WorkspaceFileDiff[] = [];
  let patchBytes = 0;
  const deadline = Date.now() + DIFF_TIMEOUT_MS.perRun;
  for (const change of changes.changes) {
    const sides: TextCopy[] = [];
    if (change.change !== "added") sides.push(before.files.get(change.path)?.copy ?? absent);
    if (change.change !== "removed") sides.push(after.files.get(change.path)?.copy ?? absent);
    const binary = sides.some((side) => "omitted" in side && side.omitted === "binary");
    const entry = { ...change, kind: binary ? ("binary" as const) : ("text" as const) };
    const missing = sides.find(
      (side): side is Exclude<TextCopy, { text: string }> => !("text" in side),
    );
    if (missing) {
      files.push({ ...entry, patch: null, omitted: missing.omitted });
      continue;
    }
    const text = (copy: TextCopy | undefined) => (copy && "text" in copy ? copy.text : "");
    const was = text(before.files.get(change.path)?.copy);
    const now = text(after.files.get(change.path)?.copy);
    const left = deadline - Date.now();
    const patch =
      change.change === "modified"
        ? left > 0
          ? modifiedPatch(change.path, was, now, Math.min(DIFF_TIMEOUT_MS.perFile, left))
          : null
        : wholeFilePatch(change.path, change.change, change.change === "added" ? now : was);
    // Each diff may hold the event loop for a moment: other work gets a turn in between.
    await nextTurn(undefined);
    const bytes = patch === null ? Number.POSITIVE_INFINITY : Buffer.byteLength(patch);
    if (bytes > WORKSPACE_DIFF_LIMITS.patchBytesPerFile)
      files.push({ ...entry, patch: null, omitted: "diff_too_large" });
    else if (patchBytes + bytes > WORKSPACE_DIFF_LIMITS.patchBytesTotal)
      files.push({ ...entry, patch: null, omitted: "total_too_large" });
    else {
      patchBytes += bytes;
      files.push({ ...entry, patch, omitted: null });
    }
  }
  return { files, patchBytes, truncated: changes.truncated };
}
