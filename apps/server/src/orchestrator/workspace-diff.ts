import {
  WORKSPACE_DIFF_LIMITS,
  type WorkspaceChanges,
  type WorkspaceDiff,
  type WorkspaceFileDiff,
} from "@shells/contract";
import { createTwoFilesPatch } from "diff";
import type { TextCopy, WorkspaceManifest } from "./workspace-changes.js";

/**
 * Longest one file's diff may compute before it is omitted as too large: the diff runs in steps
 * that yield to other work, and this bounds the time a pathological pair of files can take.
 */
const DIFF_TIMEOUT_MS = 2000;

/** A unified diff of two texts, or null when computing it ran past {@link DIFF_TIMEOUT_MS}. */
function unifiedDiff(path: string, change: WorkspaceFileDiff["change"], was: string, now: string) {
  return new Promise<string | null>((resolve) => {
    createTwoFilesPatch(
      change === "added" ? "/dev/null" : `a/${path}`,
      change === "removed" ? "/dev/null" : `b/${path}`,
      was,
      now,
      undefined,
      undefined,
      { context: 3, timeout: DIFF_TIMEOUT_MS, callback: (patch) => resolve(patch ?? null) },
    );
  });
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
  for (const change of changes.changes) {
    const sides: TextCopy[] = [];
    if (change.change !== "added") sides.push(before.files.get(change.path)?.copy ?? absent);
    if (change.change !== "removed") sides.push(after.files.get(change.path)?.copy ?? absent);
    const binary = sides.some((side) => "omitted" in side && side.omitted === "binary");
    const entry = { ...change, kind: binary ? ("binary" as const) : ("text" as const) };
    const missing = sides.find((side): side is Exclude<TextCopy, { text: string }> => !("text" in side));
    if (missing) {
      files.push({ ...entry, patch: null, omitted: missing.omitted });
      continue;
    }
    const text = (copy: TextCopy | undefined) => (copy && "text" in copy ? copy.text : "");
    const patch = await unifiedDiff(
      change.path,
      change.change,
      change.change === "added" ? "" : text(before.files.get(change.path)?.copy),
      change.change === "removed" ? "" : text(after.files.get(change.path)?.copy),
    );
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

/** A side a manifest does not hold (it changed between the listing and the read). */
const absent: TextCopy = { omitted: "no_starting_copy" };
