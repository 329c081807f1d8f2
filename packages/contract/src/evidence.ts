/**
 * Evidence bundles: everything about one run that an auditor needs, checkable with no server. The
 * run's activity events come with inclusion proofs against a signed checkpoint; the run's record
 * and artifact manifest are checked against what its signed `run.finish` event says.
 */
import { z } from "zod";
import { ActivityEvent, canonicalJson } from "./activity.js";
import {
  Checkpoint,
  CheckpointKey,
  HashHex,
  InclusionProof,
  checkpointSignatureProblem,
  eventInclusionProblem,
  fromBase64,
} from "./checkpoints.js";
import { toHex, type Sha256 } from "./merkle.js";
import { Run, RunReview, WorkspaceChanges, WorkspaceDiff } from "./runs.js";

/** Format tag of the first evidence bundles: no workspace diff. Still verified. */
export const EVIDENCE_FORMAT_V1 = "shells-evidence/v1";
/** Format tag of bundles with the run's workspace diff but no reviews. Still verified. */
export const EVIDENCE_FORMAT_V2 = "shells-evidence/v2";
/** Format tag of the evidence bundles exported now: v2 plus the run's reviews. */
export const EVIDENCE_FORMAT = "shells-evidence/v3";

/** One kept artifact: its hash as recorded when the run ended, and its bytes when exported with them. */
export const ArtifactEvidence = z.strictObject({
  path: z.string(),
  sizeBytes: z.int().min(0),
  sha256: HashHex,
  /** The artifact's bytes (base64), when the bundle was exported with them. */
  contentBase64: z.string().optional(),
});
export type ArtifactEvidence = z.infer<typeof ArtifactEvidence>;

/** What `GET /api/v1/runs/:id/evidence` answers and `shells evidence export` writes. */
export const EvidenceBundle = z.strictObject({
  format: z.enum([EVIDENCE_FORMAT_V1, EVIDENCE_FORMAT_V2, EVIDENCE_FORMAT]),
  exportedAt: z.iso.datetime(),
  run: Run,
  /** Every activity event of the run and of its shell, in `seq` order. */
  events: z.array(ActivityEvent),
  /** One inclusion proof per event, in the same order, against `checkpoint`. */
  proofs: z.array(InclusionProof),
  /** The artifacts the run kept, as its `run.finish` event lists them. */
  artifacts: z.array(ArtifactEvidence),
  /** What the run changed in /workspace, when it was taken (its hash is in `run.finish`). */
  workspaceChanges: WorkspaceChanges.nullable(),
  /**
   * What the run changed as unified diffs and a binary manifest (its hash is in `run.finish`);
   * v2 only. Null when not taken, or removed when the run's retention ran out.
   */
  workspaceDiff: WorkspaceDiff.nullable().optional(),
  /**
   * The review outcome: every review of the run, oldest first, each matching a signed `run.review`
   * event of the bundle; the run's `review` is the last one. v3 only.
   */
  reviews: z.array(RunReview).optional(),
  checkpoint: Checkpoint,
  /** The public key that signed the checkpoint (compare its id with the server's published keys). */
  key: CheckpointKey,
});
export type EvidenceBundle = z.infer<typeof EvidenceBundle>;

/** The artifact manifest a `run.finish` event records. */
const RecordedManifest = z.array(
  z.strictObject({ path: z.string(), sizeBytes: z.int(), sha256: HashHex }),
);

/** Outcome of {@link verifyEvidenceBundle}. */
export interface EvidenceVerification {
  ok: boolean;
  /** The first thing that does not hold, when `ok` is false. */
  problem: string | null;
  /** What was checked and held, in order. */
  checked: string[];
  /** The key the checkpoint is signed with, and whether it was among the keys the caller trusts. */
  keyId: string;
  keyTrusted: boolean;
}

const encoder = new TextEncoder();

/**
 * SHA-256 (hex) of a value's canonical JSON: how a `run.finish` event records the run's structured
 * result and its workspace changes.
 */
export function canonicalSha256(sha256: Sha256, value: unknown): string {
  return toHex(sha256(encoder.encode(canonicalJson(value))));
}

/**
 * Checks an evidence bundle offline: the checkpoint's signature (with `trustedKeys`, else the key
 * the bundle carries, reported as untrusted), every event's inclusion proof, that every event is
 * about this run or its shell, that the run's record agrees with its signed `run.start` and
 * `run.finish` events, that the artifact manifest and the workspace changes are the ones
 * `run.finish` recorded (or that a signed `run.retention.expire` event says why they are gone), and the
 * hash of every artifact whose bytes are included, and (v3) that the review outcome is the one the
 * signed `run.review` events record. Bundles of every format (v1, v2, v3) verify. Stops at the first failure and names it.
 */
export async function verifyEvidenceBundle(
  sha256: Sha256,
  bundle: EvidenceBundle,
  options: { trustedKeys?: readonly CheckpointKey[] } = {},
): Promise<EvidenceVerification> {
  const checked: string[] = [];
  const keyTrusted = options.trustedKeys !== undefined;
  const result = (problem: string | null): EvidenceVerification => ({
    ok: problem === null,
    problem,
    checked,
    keyId: bundle.checkpoint.keyId,
    keyTrusted,
  });
  const { run, checkpoint } = bundle;

  const signature = await checkpointSignatureProblem(
    sha256,
    checkpoint,
    options.trustedKeys ?? [bundle.key],
  );
  if (signature) return result(signature);
  checked.push(
    `signature of checkpoint ${checkpoint.id} (org ${checkpoint.orgId}, ${checkpoint.treeSize} events) by key ${checkpoint.keyId}`,
  );

  if (bundle.proofs.length !== bundle.events.length)
    return result(`${bundle.events.length} events but ${bundle.proofs.length} proofs`);
  for (const [i, event] of bundle.events.entries()) {
    const problem = eventInclusionProblem(
      sha256,
      event,
      bundle.proofs[i] as InclusionProof,
      checkpoint,
    );
    if (problem) return result(problem);
    const about = event.target?.id;
    if (about !== run.id && about !== run.shellId)
      return result(
        `event ${event.id} (seq ${event.seq}) is about ${about ?? "nothing"}, not run ${run.id} or its shell`,
      );
  }
  checked.push(`inclusion of ${bundle.events.length} events in the checkpoint's tree`);

  const ofRun = (action: string) =>
    bundle.events.find((e) => e.action === action && e.target?.id === run.id);
  const start = ofRun("run.start");
  if (!start) return result(`no signed run.start event of run ${run.id}`);
  if (start.details["shellId"] !== run.shellId)
    return result(`the run's shell ${run.shellId} is not the one its run.start event names`);
  // The template version is part of the run's policy contract: the record must name the one
  // its signed start event names (both absent for a run made without one).
  if ((start.details["template"] ?? null) !== (run.template ?? null))
    return result(
      `the run's template ${run.template ?? "(none)"} is not the one its run.start event names`,
    );
  const finish = ofRun("run.finish");
  if (run.status !== "running") {
    if (!finish)
      return result(`run ${run.id} is ${run.status} but no signed run.finish event says so`);
    const d = finish.details;
    // A run that failed before its command ran records why instead of an exit code.
    const fields: [string, unknown][] = [["status", run.status]];
    if (d["error"] === undefined)
      fields.push(["exitCode", run.exitCode], ["killReason", run.killReason]);
    for (const [field, value] of fields) {
      if (d[field] !== value)
        return result(
          `the run's ${field} ${JSON.stringify(value)} differs from its run.finish event (${JSON.stringify(d[field])})`,
        );
    }
    if (typeof d["resultSha256"] === "string" || run.result !== null) {
      const resultHash = run.result === null ? null : canonicalSha256(sha256, run.result);
      if (d["resultSha256"] !== resultHash)
        return result("the run's result differs from the one its run.finish event recorded");
    }
    checked.push(
      "the run's status, exit code, kill reason and result against its run.finish event",
    );
  }

  const manifest = finish ? RecordedManifest.safeParse(finish.details["artifactManifest"]) : null;
  if (manifest?.success) {
    const recorded = canonicalJson(manifest.data);
    const given = canonicalJson(
      bundle.artifacts.map(({ path, sizeBytes, sha256: hash }) => ({
        path,
        sizeBytes,
        sha256: hash,
      })),
    );
    if (recorded !== given)
      return result("the artifact manifest differs from the one the run.finish event recorded");
    checked.push(`artifact manifest (${bundle.artifacts.length}) against the run.finish event`);
  } else if (bundle.artifacts.length > 0) {
    return result("the bundle lists artifacts but no signed run.finish event records a manifest");
  }
  // Retention may have removed the changes and diff: then a signed event of the run says so, and
  // the bundle proves their hashes (in run.finish) but not their content.
  const expiry = ofRun("run.retention.expire");
  if (run.expiredAt !== undefined && !expiry)
    return result(`run ${run.id} says its retention ran out but no signed event records it`);
  const changesHash = finish?.details["workspaceChangesSha256"];
  if (typeof changesHash === "string" && bundle.workspaceChanges === null && expiry) {
    checked.push("workspace changes removed by retention (a signed event records it)");
  } else if (typeof changesHash === "string") {
    if (bundle.workspaceChanges === null)
      return result("the bundle leaves out the workspace changes its run.finish event records");
    if (canonicalSha256(sha256, bundle.workspaceChanges) !== changesHash)
      return result("the workspace changes differ from the ones the run.finish event recorded");
    checked.push(
      `workspace changes (${bundle.workspaceChanges.changes.length}) against the run.finish event`,
    );
  } else if (bundle.workspaceChanges !== null) {
    return result("the bundle lists workspace changes but no signed run.finish event records them");
  }
  const diffHash = finish?.details["workspaceDiffSha256"];
  const diff = bundle.workspaceDiff ?? null;
  if (bundle.format === EVIDENCE_FORMAT_V1 && bundle.workspaceDiff !== undefined)
    return result(`a ${EVIDENCE_FORMAT_V1} bundle carries no workspace diff`);
  if (typeof diffHash === "string" && diff === null) {
    // A v1 bundle predates diffs; a v2 one leaves it out only when retention removed it.
    if (bundle.format !== EVIDENCE_FORMAT_V1 && !expiry)
      return result("the bundle leaves out the workspace diff its run.finish event records");
  } else if (typeof diffHash === "string") {
    if (canonicalSha256(sha256, diff) !== diffHash)
      return result("the workspace diff differs from the one the run.finish event recorded");
    checked.push(`workspace diff (${diff?.files.length ?? 0} files) against the run.finish event`);
  } else if (diff !== null) {
    return result("the bundle carries a workspace diff but no signed run.finish event records it");
  }
  const reviewProblem = reviewsProblem(bundle);
  if (reviewProblem) return result(reviewProblem);
  if ((bundle.reviews ?? []).length > 0)
    checked.push(`${bundle.reviews?.length ?? 0} reviews against their run.review events`);
  let withBytes = 0;
  for (const artifact of bundle.artifacts) {
    if (artifact.contentBase64 === undefined) continue;
    const bytes = fromBase64(artifact.contentBase64);
    if (bytes.length !== artifact.sizeBytes || toHex(sha256(bytes)) !== artifact.sha256)
      return result(`artifact ${artifact.path}: its bytes do not match the recorded SHA-256`);
    withBytes += 1;
  }
  if (withBytes > 0) checked.push(`bytes of ${withBytes} artifacts against their hashes`);
  return result(null);
}

/**
 * Why a bundle's review outcome does not hold, or null: a v3 bundle lists exactly the reviews its
 * signed `run.review` events record, in order, and the run's `review` is the last of them. Earlier
 * formats carry no reviews (and their runs no `review`).
 */
function reviewsProblem(bundle: EvidenceBundle): string | null {
  const { run } = bundle;
  if (bundle.format !== EVIDENCE_FORMAT)
    return bundle.reviews !== undefined || (run.review ?? null) !== null
      ? `a ${bundle.format} bundle carries no reviews`
      : null;
  const signed = bundle.events.filter(
    (e) => e.action === "run.review" && e.target?.id === run.id && e.outcome === "success",
  );
  const reviews = bundle.reviews ?? [];
  if (signed.length !== reviews.length)
    return `the bundle lists ${reviews.length} reviews but ${signed.length} signed run.review events record reviews`;
  for (const [i, review] of reviews.entries()) {
    const event = signed[i] as ActivityEvent;
    const d = event.details;
    if (
      d["reviewId"] !== review.id ||
      d["verdict"] !== review.verdict ||
      d["comment"] !== review.comment ||
      event.actor.id !== review.reviewedBy
    )
      return `review ${review.id} differs from its signed run.review event (${event.id})`;
  }
  const last = reviews.at(-1) ?? null;
  if (canonicalJson(run.review ?? null) !== canonicalJson(last))
    return "the run's review is not the last review its signed run.review events record";
  return null;
}
