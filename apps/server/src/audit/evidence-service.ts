import { EVIDENCE_FORMAT, HashHex, type EvidenceBundle } from "@shells/contract";
import { z } from "zod";
import type { Caller } from "../iam/principal.js";
import { nowIso } from "../ids.js";
import type { RunReviewService } from "../orchestrator/run-reviews.js";
import type { RunService } from "../orchestrator/run-service.js";
import type { CheckpointService } from "./checkpoint-service.js";
import type { CheckpointSigner } from "./checkpoint-signer.js";

/** The artifact manifest a run's `run.finish` event records. */
const RecordedManifest = z.array(
  z.object({ path: z.string(), sizeBytes: z.int(), sha256: HashHex }),
);

/**
 * Evidence bundles of runs: the run's record, every activity event of the run and of its shell
 * (actions, policy decisions, approvals, egress decisions) with inclusion proofs against a signed
 * checkpoint that covers them all, the artifact manifest, the workspace changes and the diff its
 * `run.finish` event recorded (the hashes only, once retention removed them), the run's reviews, and the public key. The contract's `verifyEvidenceBundle` checks one with no server.
 */
export class EvidenceService {
  constructor(
    private readonly runs: RunService,
    private readonly checkpoints: CheckpointService,
    private readonly signer: CheckpointSigner,
    private readonly reviews: RunReviewService,
  ) {}

  async bundle(caller: Caller, runId: string): Promise<EvidenceBundle> {
    const found = await this.runs.get(caller, runId);
    const reviews = await this.reviews.list(caller, found.id);
    const run = { ...found, review: reviews.at(-1) ?? null };
    const reviewIds = new Set(reviews.map((r) => r.id));
    // A review recorded after the reviews were read stays out, so the two agree.
    const events = (await this.runs.activityOf(caller, runId)).filter(
      (e) =>
        e.action !== "run.review" ||
        e.outcome !== "success" ||
        reviewIds.has(String(e.details["reviewId"])),
    );
    const newestSeq = events.reduce((max, event) => Math.max(max, event.seq), 0);
    const checkpoint = await this.checkpoints.covering(caller.orgId, newestSeq);
    const key = this.signer.publicKeys().find((k) => k.keyId === checkpoint.keyId);
    // Keys are never dropped from the keys file; one missing is a fault of the server's data dir.
    if (!key) throw new Error(`checkpoint signing key ${checkpoint.keyId} is not in the keys file`);
    const finish = events.find((e) => e.action === "run.finish" && e.target?.id === run.id);
    const manifest = RecordedManifest.safeParse(finish?.details["artifactManifest"]);
    return {
      format: EVIDENCE_FORMAT,
      exportedAt: nowIso(),
      run,
      events,
      proofs: await this.checkpoints.inclusionProofs(caller.orgId, events, checkpoint),
      artifacts: manifest.success
        ? manifest.data.map(({ path, sizeBytes, sha256 }) => ({ path, sizeBytes, sha256 }))
        : [],
      workspaceChanges: await this.runs.changesOf(caller, runId),
      workspaceDiff: await this.runs.diffOf(caller, runId),
      reviews,
      checkpoint,
      key,
    };
  }
}
