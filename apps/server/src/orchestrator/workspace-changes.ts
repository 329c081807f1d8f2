import {
  WORKSPACE_CHANGE_LIMITS,
  WORKSPACE_DIFF_LIMITS,
  type WorkspaceChange,
  type WorkspaceChanges,
} from "@shells/contract";
import { createHash } from "node:crypto";
import { setImmediate as nextTurn } from "node:timers/promises";
import { walkFiles, type RunningShell } from "./run-artifacts.js";

/**
 * A file's content as a manifest keeps it for diffs: its text, or why it has none (`binary`: a NUL
 * byte or invalid UTF-8; `file_too_large`: over the text limit or never read; `no_starting_copy`:
 * past the manifest's budget of kept text).
 */
export type TextCopy =
  { text: string } | { omitted: "binary" | "file_too_large" | "no_starting_copy" };

/** One file of /workspace as a manifest records it. */
interface ManifestEntry {
  sizeBytes: number;
  modifiedAt: string;
  /** Null past the hashing limit, or when the file could not be read. */
  sha256: string | null;
  copy: TextCopy;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Whether bytes read whole are text: no NUL byte and valid UTF-8. */
function textOf(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

/** The files under /workspace at one moment, by path relative to it. */
export interface WorkspaceManifest {
  files: Map<string, ManifestEntry>;
  truncated: boolean;
}

/**
 * Records every regular file under /workspace (within {@link WORKSPACE_CHANGE_LIMITS}) with its
 * size, modification time and SHA-256, read through the backend; past the per-file or total
 * hashing limit a file is recorded without its hash. Links are never followed. Text files up to
 * `WORKSPACE_DIFF_LIMITS.textFileBytes` keep their content, within `startCopyBytesTotal` in all,
 * so a later manifest can be diffed against this one: what a run holds in memory is bounded.
 */
export async function workspaceManifest(shell: RunningShell): Promise<WorkspaceManifest> {
  const { files, truncated } = await walkFiles(
    shell,
    "/workspace",
    WORKSPACE_CHANGE_LIMITS.depth,
    WORKSPACE_CHANGE_LIMITS.files,
  );
  const manifest = new Map<string, ManifestEntry>();
  // What a run makes us read is bounded whatever it leaves in /workspace.
  let budget: number = WORKSPACE_CHANGE_LIMITS.hashBytesTotal;
  let textBudget: number = WORKSPACE_DIFF_LIMITS.startCopyBytesTotal;
  for (const [i, file] of files.entries()) {
    let sha256: string | null = null;
    let copy: TextCopy = { omitted: "file_too_large" };
    if (file.sizeBytes <= Math.min(WORKSPACE_CHANGE_LIMITS.hashBytesPerFile, budget)) {
      budget -= file.sizeBytes;
      try {
        const bytes = await shell.call((b) =>
          b.files.read(shell.shellId, file.path, WORKSPACE_CHANGE_LIMITS.hashBytesPerFile),
        );
        sha256 = createHash("sha256").update(bytes).digest("hex");
        if (bytes.length <= WORKSPACE_DIFF_LIMITS.textFileBytes) {
          const text = textOf(bytes);
          if (text === null) copy = { omitted: "binary" };
          else if (bytes.length > textBudget) copy = { omitted: "no_starting_copy" };
          else {
            textBudget -= bytes.length;
            copy = { text };
          }
        } else if (bytes.subarray(0, 8192).includes(0)) copy = { omitted: "binary" };
      } catch {
        // Gone or grown past the limit meanwhile: compared by size.
      }
    }
    manifest.set(file.path.replace(/^\/workspace\//, ""), {
      sizeBytes: file.sizeBytes,
      modifiedAt: file.modifiedAt,
      sha256,
      copy,
    });
    // Hashing is work the workload chose the size of: other callers get turns.
    if (i % 64 === 63) await nextTurn(undefined);
  }
  return { files: manifest, truncated };
}

/**
 * What changed between two manifests, sorted by path: files only in `after` were added, only in
 * `before` removed, and in both modified when their sizes or hashes differ (where either side has no
 * hash: their modification times).
 */
export function workspaceChanges(
  before: WorkspaceManifest,
  after: WorkspaceManifest,
): WorkspaceChanges {
  const changes: WorkspaceChange[] = [];
  const paths = [...new Set([...before.files.keys(), ...after.files.keys()])].sort();
  for (const path of paths) {
    const was = before.files.get(path);
    const now = after.files.get(path);
    const entry = {
      path,
      sizeBytes: now?.sizeBytes ?? null,
      sha256: now?.sha256 ?? null,
      previousSizeBytes: was?.sizeBytes ?? null,
      previousSha256: was?.sha256 ?? null,
    };
    if (!was) changes.push({ ...entry, change: "added" });
    else if (!now) changes.push({ ...entry, change: "removed" });
    else if (
      was.sizeBytes !== now.sizeBytes ||
      (was.sha256 !== null && now.sha256 !== null
        ? was.sha256 !== now.sha256
        : was.modifiedAt !== now.modifiedAt)
    )
      changes.push({ ...entry, change: "modified" });
  }
  return { changes, truncated: before.truncated || after.truncated };
}
