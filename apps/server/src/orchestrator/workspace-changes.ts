import {
  WORKSPACE_CHANGE_LIMITS,
  type WorkspaceChange,
  type WorkspaceChanges,
} from "@shells/contract";
import { createHash } from "node:crypto";
import { setImmediate as nextTurn } from "node:timers/promises";
import { walkFiles, type RunningShell } from "./run-artifacts.js";

/** One file of /workspace as a manifest records it. */
interface ManifestEntry {
  sizeBytes: number;
  modifiedAt: string;
  /** Null past the hashing limit, or when the file could not be read. */
  sha256: string | null;
}

/** The files under /workspace at one moment, by path relative to it. */
export interface WorkspaceManifest {
  files: Map<string, ManifestEntry>;
  truncated: boolean;
}

/**
 * Records every regular file under /workspace (within {@link WORKSPACE_CHANGE_LIMITS}) with its
 * size, modification time and SHA-256, read through the backend; past the per-file or total
 * hashing limit a file is recorded without its hash. Links are never followed.
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
  for (const [i, file] of files.entries()) {
    let sha256: string | null = null;
    if (file.sizeBytes <= Math.min(WORKSPACE_CHANGE_LIMITS.hashBytesPerFile, budget)) {
      budget -= file.sizeBytes;
      try {
        const bytes = await shell.call((b) =>
          b.files.read(shell.shellId, file.path, WORKSPACE_CHANGE_LIMITS.hashBytesPerFile),
        );
        sha256 = createHash("sha256").update(bytes).digest("hex");
      } catch {
        // Gone or grown past the limit meanwhile: compared by size.
      }
    }
    manifest.set(file.path.replace(/^\/workspace\//, ""), {
      sizeBytes: file.sizeBytes,
      modifiedAt: file.modifiedAt,
      sha256,
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
