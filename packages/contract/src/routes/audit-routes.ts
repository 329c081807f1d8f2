import { z } from "zod";
import {
  Checkpoint,
  CheckpointConsistency,
  CheckpointKeys,
  EventProof,
  TreeLeaves,
} from "../checkpoints.js";
import { EvidenceBundle } from "../evidence.js";
import { pageOf } from "../pages.js";
import { shellId, type RouteSpec } from "./route-spec.js";

/** A checkpoint id in a path or query. */
const checkpointId = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "a checkpoint id");

/** Signed checkpoints of the activity history, proofs against them, and evidence bundles of runs. */
export const auditRoutes = {
  getCheckpointKeys: {
    method: "GET",
    path: "/.well-known/shells-checkpoint-keys",
    summary: "The public keys this server signs activity checkpoints with (no credentials needed).",
    description:
      "Each key's id is the SHA-256 of its raw Ed25519 public key. Keep a copy: a checkpoint verifies against it with no server.",
    tag: "audit",
    response: CheckpointKeys,
    successStatus: 200,
    scope: null,
  },
  createCheckpoint: {
    method: "POST",
    path: "/api/v1/audit/checkpoints",
    summary:
      "Sign a checkpoint of the org's activity history now (the newest one when nothing was added since).",
    description:
      "A checkpoint signs the org's event count and the RFC 6962 Merkle root over its events. Save it outside the server: `shells audit verify --checkpoint FILE` later proves that nothing it covers was changed, removed or truncated.",
    tag: "audit",
    response: Checkpoint,
    successStatus: 200,
    scope: "shells:instances:read",
    example: {},
  },
  listCheckpoints: {
    method: "GET",
    path: "/api/v1/audit/checkpoints",
    summary: "The org's signed checkpoints, newest first.",
    tag: "audit",
    query: z.strictObject({
      limit: z.coerce.number().int().min(1).max(200).default(50),
      cursor: z.string().max(512).optional(),
    }),
    response: pageOf(Checkpoint),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getCheckpoint: {
    method: "GET",
    path: "/api/v1/audit/checkpoints/:id",
    summary: "One signed checkpoint.",
    tag: "audit",
    params: z.strictObject({ id: checkpointId }),
    response: Checkpoint,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{checkpoint}" } },
  },
  getEventProof: {
    method: "GET",
    path: "/api/v1/audit/events/:id/proof",
    summary: "The inclusion proof of one activity event against a signed checkpoint.",
    description:
      "Against `checkpoint` when given (it must cover the event), otherwise against the newest checkpoint, signing a new one first when the newest does not cover the event yet.",
    tag: "audit",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({ checkpoint: checkpointId.optional() }),
    response: EventProof,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{event}" } },
  },
  getConsistencyProof: {
    method: "GET",
    path: "/api/v1/audit/consistency",
    summary: "The proof that a checkpoint's tree extends the tree of the first `from` events.",
    description:
      "`from` is the tree size of an earlier checkpoint (one saved outside the server, say); `to` is a checkpoint id, the newest when left out.",
    tag: "audit",
    query: z.strictObject({
      from: z.coerce.number().int().min(0),
      to: checkpointId.optional(),
    }),
    response: CheckpointConsistency,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { query: { from: "0" } },
  },
  listTreeLeaves: {
    method: "GET",
    path: "/api/v1/audit/leaves",
    summary:
      "Leaf hashes of the org's activity tree, as recorded with each event, from leaf `from` on.",
    description:
      "A verifier that finds the history no longer matching a checkpoint compares these (once they reproduce the checkpoint's root) with the events to name the one that changed.",
    tag: "audit",
    query: z.strictObject({
      from: z.coerce.number().int().min(0).default(0),
      limit: z.coerce.number().int().min(1).max(5000).default(1000),
    }),
    response: TreeLeaves,
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getRunEvidence: {
    method: "GET",
    path: "/api/v1/runs/:id/evidence",
    summary:
      "A run's evidence bundle: record, events with inclusion proofs, artifact manifest, signed checkpoint.",
    description:
      "Proves its events against the newest checkpoint, signing a new one first when it does not cover them. `shells evidence verify` checks a bundle with no server.",
    tag: "audit",
    params: z.strictObject({ id: shellId }),
    response: EvidenceBundle,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
} as const satisfies Record<string, RouteSpec>;
