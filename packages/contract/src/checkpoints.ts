/**
 * Signed checkpoints of the activity history: each org's events are the leaves of an RFC 6962
 * Merkle tree (in `seq` order), and the server signs (org, tree size, root, time) with Ed25519. A
 * checkpoint kept outside the server lets anyone later prove that the history still begins with
 * exactly the events it covered; inclusion proofs show that one event is among them.
 */
import { z } from "zod";
import { ActivityEvent, canonicalJson } from "./activity.js";
import {
  fromHex,
  merkleLeafHash,
  sameHash,
  toHex,
  verifyConsistency,
  verifyInclusion,
  type Sha256,
} from "./merkle.js";

/** A SHA-256 digest as 64 lower-case hex digits. */
export const HashHex = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");

/** What a checkpoint's signature covers, and which version of the leaf encoding it uses. */
export const CHECKPOINT_FORMAT = "shells-checkpoint/v1";

/** A signed statement: the org's history had `treeSize` events and its tree root was `rootHash`. */
export const Checkpoint = z.strictObject({
  id: z.string(),
  format: z.literal(CHECKPOINT_FORMAT),
  orgId: z.string(),
  /** Events covered: the first `treeSize` events of the org's history (seq 1 … treeSize). */
  treeSize: z.int().min(0),
  /** RFC 6962 root of the tree over those events (hex). */
  rootHash: HashHex,
  /** When the server signed it. */
  time: z.iso.datetime(),
  /** Id of the signing key: SHA-256 (hex) of its raw 32-byte Ed25519 public key. */
  keyId: HashHex,
  /** Ed25519 signature (base64) over {@link checkpointSignedBytes}. */
  signature: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, "a base64 Ed25519 signature"),
});
export type Checkpoint = z.infer<typeof Checkpoint>;

/** A public key the server signs checkpoints with. */
export const CheckpointKey = z.strictObject({
  keyId: HashHex,
  algorithm: z.literal("Ed25519"),
  /** The raw 32-byte public key, base64. */
  publicKey: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, "a base64 Ed25519 public key"),
  /** Whether new checkpoints are signed with this key (older ones stay published to verify old checkpoints). */
  current: z.boolean(),
});
export type CheckpointKey = z.infer<typeof CheckpointKey>;

/** The document at `/.well-known/shells-checkpoint-keys`. */
export const CheckpointKeys = z.strictObject({ keys: z.array(CheckpointKey) });
export type CheckpointKeys = z.infer<typeof CheckpointKeys>;

/** The proof that one event is leaf `leafIndex` of a checkpoint's tree. */
export const InclusionProof = z.strictObject({
  eventId: z.string(),
  /** `seq - 1`. */
  leafIndex: z.int().min(0),
  treeSize: z.int().min(1),
  /** The leaf hash the server's tree holds for this event (recorded when the event was). */
  leafHash: HashHex,
  /** Sibling hashes from the leaf up (RFC 6962 audit path). */
  path: z.array(HashHex),
});
export type InclusionProof = z.infer<typeof InclusionProof>;

/** The proof that a tree of `toSize` events extends the tree of the first `fromSize`. */
export const ConsistencyProof = z.strictObject({
  fromSize: z.int().min(0),
  toSize: z.int().min(0),
  path: z.array(HashHex),
});
export type ConsistencyProof = z.infer<typeof ConsistencyProof>;

/** Answer of `GET /api/v1/audit/events/:id/proof`. */
export const EventProof = z.strictObject({ proof: InclusionProof, checkpoint: Checkpoint });
export type EventProof = z.infer<typeof EventProof>;

/** Answer of `GET /api/v1/audit/consistency`. */
export const CheckpointConsistency = z.strictObject({
  proof: ConsistencyProof,
  /** The later checkpoint the proof leads to. */
  checkpoint: Checkpoint,
});
export type CheckpointConsistency = z.infer<typeof CheckpointConsistency>;

/** Stored leaf hashes of the org's tree, from leaf `from` on (answer of `GET /api/v1/audit/leaves`). */
export const TreeLeaves = z.strictObject({
  from: z.int().min(0),
  leaves: z.array(HashHex),
  /** Leaves the tree holds in all. */
  treeSize: z.int().min(0),
});
export type TreeLeaves = z.infer<typeof TreeLeaves>;

/** The fields of a checkpoint its signature covers. */
export type SignedCheckpointFields = Pick<Checkpoint, "orgId" | "treeSize" | "rootHash" | "time">;

/**
 * The bytes a checkpoint's signature covers: canonical JSON of its format, org, size, root and
 * time (so no field can be moved into another, whatever it contains).
 */
export function checkpointSignedBytes(fields: SignedCheckpointFields): Uint8Array {
  return new TextEncoder().encode(
    canonicalJson({
      format: CHECKPOINT_FORMAT,
      orgId: fields.orgId,
      treeSize: fields.treeSize,
      rootHash: fields.rootHash,
      time: fields.time,
    }),
  );
}

/**
 * The leaf hash of an activity event: SHA-256(0x00 || canonical JSON of every field, its id and
 * chain hash included).
 */
export function activityLeafHash(sha256: Sha256, event: ActivityEvent): Uint8Array {
  const fields: ActivityEvent = {
    id: event.id,
    seq: event.seq,
    orgId: event.orgId,
    actor: event.actor,
    action: event.action,
    target: event.target,
    outcome: event.outcome,
    details: event.details,
    time: event.time,
    prevHash: event.prevHash,
    hash: event.hash,
  };
  return merkleLeafHash(sha256, new TextEncoder().encode(canonicalJson(fields)));
}

/** A key id: SHA-256 (hex) of the raw public key. */
export function checkpointKeyId(sha256: Sha256, rawPublicKey: Uint8Array): string {
  return toHex(sha256(rawPublicKey));
}

/** Bytes of a base64 string (atob runs in Node and browsers). */
export function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

/**
 * Checks a checkpoint's signature against the published keys: the key it names must be among
 * them, its id must be the hash of its bytes, and the Ed25519 signature must hold (WebCrypto).
 * Returns what is wrong, or null.
 */
export async function checkpointSignatureProblem(
  sha256: Sha256,
  checkpoint: Checkpoint,
  keys: readonly CheckpointKey[],
): Promise<string | null> {
  const key = keys.find((k) => k.keyId === checkpoint.keyId);
  if (!key)
    return `checkpoint ${checkpoint.id} is signed by key ${checkpoint.keyId}, which is not among the trusted keys`;
  const raw = fromBase64(key.publicKey);
  if (checkpointKeyId(sha256, raw) !== key.keyId)
    return `key ${key.keyId} is not the hash of the public key published under it`;
  const publicKey = await globalThis.crypto.subtle.importKey(
    "raw",
    raw,
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  const valid = await globalThis.crypto.subtle.verify(
    { name: "Ed25519" },
    publicKey,
    fromBase64(checkpoint.signature),
    checkpointSignedBytes(checkpoint),
  );
  return valid
    ? null
    : `checkpoint ${checkpoint.id}: the signature does not match its org, size, root and time`;
}

/**
 * Checks that `event` is in the tree a checkpoint signs: the proof is for this event at its
 * position, and its path leads from the event's own leaf hash to the checkpoint's root. A proof
 * whose path holds for the leaf the server recorded but not for the event as given means the event
 * was changed after it was recorded.
 */
export function eventInclusionProblem(
  sha256: Sha256,
  event: ActivityEvent,
  proof: InclusionProof,
  checkpoint: Checkpoint,
): string | null {
  const label = `event ${event.id} (seq ${event.seq})`;
  if (proof.eventId !== event.id) return `${label}: the proof is for event ${proof.eventId}`;
  if (event.orgId !== checkpoint.orgId)
    return `${label} belongs to org ${event.orgId}, the checkpoint to ${checkpoint.orgId}`;
  if (proof.leafIndex !== event.seq - 1)
    return `${label}: the proof places it at leaf ${proof.leafIndex}, not ${event.seq - 1}`;
  if (proof.treeSize !== checkpoint.treeSize)
    return `${label}: the proof is for a tree of ${proof.treeSize}, the checkpoint covers ${checkpoint.treeSize}`;
  const root = fromHex(checkpoint.rootHash);
  const path = proof.path.map(fromHex);
  const leafHash = activityLeafHash(sha256, event);
  const holds = (leaf: Uint8Array) =>
    verifyInclusion(sha256, {
      index: proof.leafIndex,
      size: proof.treeSize,
      leafHash: leaf,
      path,
      root,
    });
  if (holds(leafHash) === null) return null;
  const recorded = fromHex(proof.leafHash);
  if (!sameHash(recorded, leafHash) && holds(recorded) === null)
    return `${label} was changed after it was recorded: its contents no longer hash to the leaf the checkpoint covers`;
  return `${label} is not in the checkpoint's tree: ${holds(leafHash) ?? ""}`;
}

/**
 * Checks that the later checkpoint's tree begins with the earlier one's (RFC 6962 consistency).
 * Returns what is wrong, or null.
 */
export function checkpointConsistencyProblem(
  sha256: Sha256,
  earlier: Pick<Checkpoint, "treeSize" | "rootHash">,
  later: Pick<Checkpoint, "treeSize" | "rootHash">,
  proof: ConsistencyProof,
): string | null {
  if (proof.fromSize !== earlier.treeSize || proof.toSize !== later.treeSize)
    return `the proof runs from ${proof.fromSize} to ${proof.toSize}, not from ${earlier.treeSize} to ${later.treeSize}`;
  return verifyConsistency(sha256, {
    fromSize: earlier.treeSize,
    toSize: later.treeSize,
    fromRoot: fromHex(earlier.rootHash),
    toRoot: fromHex(later.rootHash),
    path: proof.path.map(fromHex),
  });
}
