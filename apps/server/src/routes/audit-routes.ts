import type { CheckpointService } from "../audit/checkpoint-service.js";
import type { EvidenceService } from "../audit/evidence-service.js";
import type { Handlers } from "./register-routes.js";

/** Signed checkpoints of the activity history, proofs against them, and run evidence bundles. */
export function auditHandlers(
  checkpoints: CheckpointService,
  evidence: EvidenceService,
): Pick<
  Handlers,
  | "getCheckpointKeys"
  | "createCheckpoint"
  | "listCheckpoints"
  | "getCheckpoint"
  | "getEventProof"
  | "getConsistencyProof"
  | "listTreeLeaves"
  | "getRunEvidence"
> {
  return {
    getCheckpointKeys: async ({ reply }) => {
      // Public and rarely changing: caches and mirrors may keep it a while.
      void reply.header("cache-control", "public, max-age=300");
      return checkpoints.publicKeys();
    },
    createCheckpoint: async ({ caller }) => checkpoints.create(caller.orgId),
    listCheckpoints: async ({ caller, query }) =>
      checkpoints.list(caller.orgId, query.limit, query.cursor),
    getCheckpoint: async ({ caller, params }) => checkpoints.get(caller.orgId, params.id),
    getEventProof: async ({ caller, params, query }) =>
      checkpoints.eventProof(caller.orgId, params.id, query.checkpoint),
    getConsistencyProof: async ({ caller, query }) =>
      checkpoints.consistency(caller.orgId, query.from, query.to),
    listTreeLeaves: async ({ caller, query }) =>
      checkpoints.leaves(caller.orgId, query.from, query.limit),
    getRunEvidence: async ({ caller, params }) => evidence.bundle(caller, params.id),
  };
}
