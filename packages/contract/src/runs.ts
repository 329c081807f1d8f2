/** Wire types of running code: streamed exec frames, interpreter turns, one-shot runs. */
import { z } from "zod";
import { BindingGrants } from "./bindings.js";
import { HashHex } from "./checkpoints.js";
import { SeedFile } from "./files.js";
import { GitSource } from "./git-source.js";
import {
  EnvMap,
  ExecResult,
  KillReason,
  Language,
  NetworkMode,
  RuntimeClass,
  ShellEgress,
  TemplateRef,
} from "./shells.js";

/** One frame of a streamed exec (`Accept: text/event-stream`). Output frames carry UTF-8 text. */
export const ExecFrame = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.enum(["stdout", "stderr"]),
    data: z.string(),
    /** When the chunk left the process, ms since the epoch. */
    time: z.number(),
  }),
  z.strictObject({
    type: z.literal("exit"),
    /** The exec's result; its stdout/stderr are empty because the output went out as frames. */
    result: ExecResult,
    time: z.number(),
  }),
]);
export type ExecFrame = z.infer<typeof ExecFrame>;

/** Body of `POST /api/v1/shells/:id/interpreter`. */
export const InterpreterRequest = z.strictObject({
  code: z.string().max(1024 * 1024),
  /** `python` or `node`; defaults to the shell's language when it is one of them. */
  language: z.enum(["python", "node"]).optional(),
  /** Wall clock of this turn (default 60 s); past it the interpreter is restarted. */
  timeoutMs: z
    .int()
    .min(1)
    .max(15 * 60 * 1000)
    .optional(),
});

/** One interpreter turn's result. */
export const InterpreterResult = z.strictObject({
  stdout: z.string(),
  stderr: z.string(),
  /** The last expression's value: JSON when it serialises, otherwise its repr. */
  value: z.unknown().nullable(),
  error: z
    .strictObject({ name: z.string(), message: z.string(), traceback: z.string() })
    .nullable(),
  /** True when this turn started a fresh interpreter (first turn, or after a crash/timeout). */
  restarted: z.boolean(),
  durationMs: z.number(),
});
export type InterpreterResult = z.infer<typeof InterpreterResult>;

/** Bounds of a run's artifact globs, so matching them stays fast whatever a caller sends. */
export const ARTIFACT_PATTERN_LIMITS = {
  count: 32,
  length: 256,
  /** `*` runs and `{…}` groups in one path segment; `**` as a whole segment is apart. */
  wildcardsPerSegment: 2,
} as const;

/**
 * Why an artifact glob is refused, or null: more wildcards in one segment than
 * {@link ARTIFACT_PATTERN_LIMITS} allows (each one more multiplies the work of matching a long
 * name), a `/` inside `{…}`, or extglob and negation syntax.
 */
export function artifactPatternProblem(glob: string): string | null {
  if (/[!@+]\(|^!/.test(glob)) return "extglob and negated patterns are not supported";
  let depth = 0;
  for (const char of glob) {
    if (char === "{") depth += 1;
    else if (char === "}") depth = Math.max(0, depth - 1);
    else if (char === "/" && depth > 0) return "a {…} group may not hold a /";
  }
  for (const segment of glob.split("/")) {
    if (segment === "**") continue;
    const wildcards = (segment.match(/\*+|\{/g) ?? []).length;
    if (wildcards > ARTIFACT_PATTERN_LIMITS.wildcardsPerSegment)
      return `at most ${ARTIFACT_PATTERN_LIMITS.wildcardsPerSegment} wildcards (* or {…}) per path segment`;
  }
  return null;
}

/**
 * Body of `POST /api/v1/runs`: exactly one of `code`, `command` or `git.entrypoint` says what
 * runs.
 */
export const RunCreate = z
  .strictObject({
    /** Source in `language`, run by its interpreter (python3, node, bash). */
    code: z
      .string()
      .max(1024 * 1024)
      .optional(),
    /** argv to run instead of code. */
    command: z
      .array(z.string().max(128 * 1024))
      .min(1)
      .max(4096)
      .optional(),
    /**
     * A template (`name` or `name@version`), as for shells: its values are defaults, its locked
     * fields may only be narrowed. A template marked `reviewBeforeRun` makes the run wait for an
     * approver: the answer is 202 with the pending approval, and the run starts when granted.
     */
    template: TemplateRef.optional(),
    /** Required unless a template gives it. */
    language: Language.optional(),
    runtime: RuntimeClass.optional(),
    network: NetworkMode.optional(),
    /** Egress allowlist of the run's shell; sets its network mode (see `ShellEgress`). */
    egress: ShellEgress.optional(),
    env: EnvMap.optional(),
    /** Secret environment: stored only sealed, never returned, redacted from frames and logs. */
    secretEnv: EnvMap.optional(),
    /** Service bindings the run's shell may call, by name (see `ShellCreate.bindings`). */
    bindings: BindingGrants.optional(),
    files: z.array(SeedFile).max(256).optional(),
    /**
     * A git repo's files at one ref, cloned by the control plane (never in the sandbox) into
     * `/workspace` before `files` are written; see `GitSource`.
     */
    git: GitSource.optional(),
    /** Globs (relative to /workspace) of output files to keep as artifacts. */
    artifacts: z
      .array(
        z
          .string()
          .min(1)
          .max(ARTIFACT_PATTERN_LIMITS.length)
          .superRefine((glob, ctx) => {
            const problem = artifactPatternProblem(glob);
            if (problem) ctx.addIssue({ code: "custom", message: problem });
          }),
      )
      .max(ARTIFACT_PATTERN_LIMITS.count)
      .optional(),
    /** Wall clock of the whole run (default 5 minutes). */
    timeoutMs: z
      .int()
      .min(1)
      .max(3600 * 1000)
      .optional(),
  })
  .refine(
    (r) => [r.code, r.command, r.git?.entrypoint].filter((what) => what !== undefined).length === 1,
    "give exactly one of code, command or git.entrypoint",
  );
export type RunCreate = z.input<typeof RunCreate>;

/** An output file kept from a run. */
export const Artifact = z.strictObject({
  /** Path relative to /workspace. */
  path: z.string(),
  sizeBytes: z.int(),
  /** SHA-256 (hex) of the bytes kept; absent on runs recorded before hashes were kept. */
  sha256: HashHex.optional(),
});
export type Artifact = z.infer<typeof Artifact>;

/** Bounds of the manifest of a run's `/workspace` changes. */
export const WORKSPACE_CHANGE_LIMITS = {
  /** Files looked at, before and after; past it the manifest says `truncated`. */
  files: 2000,
  /** Directory levels entered below /workspace. */
  depth: 8,
  /** Larger files are compared by size and modification time (their `sha256` is null). */
  hashBytesPerFile: 16 * 1024 * 1024,
  /** Bytes hashed per manifest in all; files past it are compared like larger ones. */
  hashBytesTotal: 256 * 1024 * 1024,
} as const;

/** One file under /workspace that a run added, removed or modified. */
export const WorkspaceChange = z.strictObject({
  /** Path relative to /workspace. */
  path: z.string(),
  change: z.enum(["added", "removed", "modified"]),
  /** After the run: size and SHA-256 (null when removed; the hash is null past the hashing limit). */
  sizeBytes: z.int().nullable(),
  sha256: HashHex.nullable(),
  /** Before the run (null when added). */
  previousSizeBytes: z.int().nullable(),
  previousSha256: HashHex.nullable(),
});
export type WorkspaceChange = z.infer<typeof WorkspaceChange>;

/** What a run changed in /workspace, from its start (after its files were seeded) to its end. */
export const WorkspaceChanges = z.strictObject({
  changes: z.array(WorkspaceChange),
  /** True when /workspace held more than the manifest covers: changes past the limits are not listed. */
  truncated: z.boolean(),
});
export type WorkspaceChanges = z.infer<typeof WorkspaceChanges>;

/**
 * Bounds of a run's workspace diff: starting copies are kept only of text files up to
 * `textFileBytes`, within `startCopyBytesTotal` per run; a patch past `patchBytesPerFile`, or past
 * what is left of `patchBytesTotal`, is omitted with a marker saying so.
 */
export const WORKSPACE_DIFF_LIMITS = {
  /** Larger files are listed with their sizes and hashes but not diffed. */
  textFileBytes: 1024 * 1024,
  /** Bytes of text kept per side (start, end) of one run while it runs. */
  startCopyBytesTotal: 8 * 1024 * 1024,
  /** A larger patch of one file is omitted (`diff_too_large`). */
  patchBytesPerFile: 256 * 1024,
  /** Bytes of patches one run's diff keeps in all; past it patches are omitted (`total_too_large`). */
  patchBytesTotal: 4 * 1024 * 1024,
} as const;

/** One changed file of a run's workspace diff: a unified diff for text, sizes and hashes for all. */
export const WorkspaceFileDiff = z.strictObject({
  /** Path relative to /workspace. */
  path: z.string(),
  change: z.enum(["added", "removed", "modified"]),
  /** `text`: UTF-8 with no NUL byte on every side that exists; else `binary`. */
  kind: z.enum(["text", "binary"]),
  sizeBytes: z.int().nullable(),
  sha256: HashHex.nullable(),
  previousSizeBytes: z.int().nullable(),
  previousSha256: HashHex.nullable(),
  /** The unified diff (`--- a/path`, `+++ b/path`, hunks), or null when omitted. */
  patch: z.string().nullable(),
  /**
   * Why `patch` is null: `binary` (a manifest entry only), `file_too_large` (a side over
   * `textFileBytes`), `no_starting_copy` (the run's copies were over `startCopyBytesTotal`, or it
   * could not be read), `diff_too_large` (the patch over `patchBytesPerFile`), `total_too_large`
   * (past `patchBytesTotal`).
   */
  omitted: z
    .enum(["binary", "file_too_large", "no_starting_copy", "diff_too_large", "total_too_large"])
    .nullable(),
});
export type WorkspaceFileDiff = z.infer<typeof WorkspaceFileDiff>;

/** What a run changed in /workspace, as unified diffs for text and a manifest for binaries. */
export const WorkspaceDiff = z.strictObject({
  files: z.array(WorkspaceFileDiff),
  /** Bytes of the patches kept, all together. */
  patchBytes: z.int().min(0),
  /** True when /workspace held more than the manifest covers (as in `WorkspaceChanges`). */
  truncated: z.boolean(),
});
export type WorkspaceDiff = z.infer<typeof WorkspaceDiff>;

/** An output file a run named but did not keep, and why. */
export const SkippedArtifact = z.strictObject({
  /** Path relative to /workspace. */
  path: z.string(),
  /** Size in the shell when it was looked at (0 when unknown). */
  sizeBytes: z.int(),
  /**
   * `quota_exceeded`: over the per-artifact limit or what is left of the run's quota;
   * `count_exceeded`: past the most artifacts a run keeps; `not_a_file`: not a regular file
   * (links are never followed out of the shell); `unreadable`: it could not be read;
   * `host_disk_low`: keeping it would leave the server's data dir less free space than its reserve.
   */
  reason: z.enum(["quota_exceeded", "count_exceeded", "not_a_file", "unreadable", "host_disk_low"]),
});
export type SkippedArtifact = z.infer<typeof SkippedArtifact>;

/** Bytes of each output stream a run's record keeps: the end of its stdout and of its stderr. */
export const RUN_OUTPUT_TAIL_BYTES = 4 * 1024;

/**
 * The end of a run's output, kept on its record so a caller that did not follow the stream (an
 * agent waiting on the run) still sees how it ended: the last {@link RUN_OUTPUT_TAIL_BYTES} bytes
 * of stdout and of stderr, with secret values already replaced by `[redacted]`, as they were
 * streamed.
 */
export const RunOutput = z.strictObject({
  /** The end of stdout, as UTF-8 text (a character cut by the tail's start is left out). */
  stdout: z.string(),
  /** The end of stderr, as UTF-8 text. */
  stderr: z.string(),
  /** Bytes the run wrote to stdout in all: more than `stdout` holds when its start was cut. */
  stdoutBytes: z.int(),
  /** Bytes the run wrote to stderr in all. */
  stderrBytes: z.int(),
});
export type RunOutput = z.infer<typeof RunOutput>;

/**
 * A reviewer's verdict on a run: `approved` (its outcome is accepted), `changes_requested` (the
 * work must be redone or amended before it is accepted), `rejected` (its outcome is not accepted).
 */
export const RunReviewVerdict = z.enum(["approved", "changes_requested", "rejected"]);
export type RunReviewVerdict = z.infer<typeof RunReviewVerdict>;

/** Body of `POST /api/v1/runs/:id/review`. */
export const RunReviewCreate = z.strictObject({
  verdict: RunReviewVerdict,
  comment: z.string().trim().min(1).max(4000),
});
export type RunReviewCreate = z.infer<typeof RunReviewCreate>;

/** One review of a finished run by a listed approver; its `run.review` event is signed history. */
export const RunReview = z.strictObject({
  id: z.string(),
  verdict: RunReviewVerdict,
  comment: z.string(),
  /** The reviewing user's id. */
  reviewedBy: z.string(),
  createdAt: z.iso.datetime(),
});
export type RunReview = z.infer<typeof RunReview>;

/** A one-shot run. */
export const Run = z.strictObject({
  id: z.string(),
  /**
   * `pending_approval`: the run's template asks for review and no approver decided yet (nothing
   * runs, and `shellId` is empty); a denied or expired review ends it `cancelled` with the reason
   * in `error`.
   */
  status: z.enum(["pending_approval", "running", "succeeded", "failed", "cancelled"]),
  /** The template the run was made from, as `name@version`. */
  template: z.string().nullable().optional(),
  language: Language,
  runtime: RuntimeClass,
  /** The ephemeral shell the run used; deleted when the run ends. */
  shellId: z.string(),
  exitCode: z.int().nullable(),
  killReason: KillReason.nullable(),
  /** The structured result the code reported (`shells.result(...)` or `$SHELLS_RESULT`), if any. */
  result: z.unknown().nullable(),
  artifacts: z.array(Artifact),
  /** Files the run named as artifacts but did not keep (size quota, count, type). */
  skippedArtifacts: z.array(SkippedArtifact).optional(),
  /**
   * The end of the run's output (live while it runs on the server that runs it); null for a run
   * recorded before output tails were kept, or one still running on another server.
   */
  output: RunOutput.nullable(),
  error: z.string().nullable(),
  createdAt: z.iso.datetime(),
  finishedAt: z.iso.datetime().nullable(),
  /**
   * When its retention ran out and its artifacts, workspace changes and diff were removed (their
   * manifest stays on the record and in its history); absent while they are kept.
   */
  expiredAt: z.iso.datetime().optional(),
  /** The latest review of the run (`GET /runs/:id` only); null when nobody reviewed it. */
  review: RunReview.nullable().optional(),
});
export type Run = z.infer<typeof Run>;

/** One event of a run's stream (SSE; the event id is `seq`, resumable with `Last-Event-ID`). */
export const RunFrame = z.strictObject({
  seq: z.int(),
  type: z.enum(["stdout", "stderr", "status", "result", "artifact", "exit"]),
  data: z.unknown(),
  time: z.number(),
});
export type RunFrame = z.infer<typeof RunFrame>;
