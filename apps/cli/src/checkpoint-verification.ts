import type { ActivityEvent, Checkpoint, CheckpointKey, ShellsClient } from "@l1fe/shells";
import {
  InMemoryMerkleTree,
  activityLeafHash,
  checkpointConsistencyProblem,
  checkpointSignatureProblem,
  sameHash,
  toHex,
  fromHex,
  type Sha256,
} from "@shells/contract";
import { createHash } from "node:crypto";

/** SHA-256 with node:crypto: a whole history is hashed here, one event at a time. */
export const sha256: Sha256 = (data) => createHash("sha256").update(data).digest();

/** The largest page of stored leaf hashes the server answers. */
const LEAF_PAGE = 5000;
/** The largest page of activity the server answers. */
const ACTIVITY_PAGE = 500;

/** What `shells audit verify --checkpoint` established. */
export interface CheckpointVerification {
  ok: boolean;
  /** The first thing that does not hold. */
  problem: string | null;
  /** The event it concerns, when one can be named. */
  event: { id: string; seq: number } | null;
  /** What was checked and held, in order. */
  checked: string[];
  /** The checkpoint that was saved. */
  saved: Checkpoint;
  /** The server's newest checkpoint, signed for this verification, once it was fetched. */
  current: Checkpoint | null;
  /** Events the history has now (once fetched). */
  historySize: number | null;
}

/** What a checkpoint verification proves, and what it does not. */
export const CHECKPOINT_VERIFICATION_SCOPE = {
  proves:
    "the history still begins with exactly the events the saved checkpoint covers (none changed, removed, reordered or cut off), and the server's newest signed tree extends it",
  cannotProve:
    "anything about events recorded after the saved checkpoint beyond what the server's newest checkpoint says; keep newer checkpoints outside the server to anchor them too",
} as const;

/**
 * Proves that the org's history still begins with the events a saved checkpoint covers: checks the
 * saved checkpoint's signature with the published keys, has the server sign a checkpoint of its
 * tree now and checks the consistency proof from the saved one to it, then fetches the whole
 * history, re-hashes every event into a Merkle tree on this side, and compares that tree's roots
 * with both signed roots. When they differ, the server's recorded leaf hashes (once they reproduce
 * the signed root) name the first event that was changed or removed.
 */
export async function verifyAgainstCheckpoint(
  client: ShellsClient,
  saved: Checkpoint,
  options: { trustedKeys?: readonly CheckpointKey[] } = {},
): Promise<CheckpointVerification> {
  const checked: string[] = [];
  let current: Checkpoint | null = null;
  let historySize: number | null = null;
  const outcome = (
    problem: string | null,
    event: { id: string; seq: number } | null = null,
  ): CheckpointVerification => ({
    ok: problem === null,
    problem,
    event,
    checked,
    saved,
    current,
    historySize,
  });

  const keys = options.trustedKeys ?? (await client.audit.keys());
  const savedSignature = await checkpointSignatureProblem(sha256, saved, keys);
  if (savedSignature) return outcome(`the saved checkpoint does not verify: ${savedSignature}`);
  checked.push(`signature of the saved checkpoint ${saved.id} by key ${saved.keyId}`);
  const me = await client.whoami();
  if (me.orgId !== saved.orgId)
    return outcome(`the saved checkpoint is of org ${saved.orgId}; this token acts in ${me.orgId}`);

  current = await client.audit.checkpoint();
  const currentSignature = await checkpointSignatureProblem(sha256, current, keys);
  if (currentSignature)
    return outcome(`the server's newest checkpoint does not verify: ${currentSignature}`);
  if (current.treeSize < saved.treeSize)
    return outcome(
      `truncated: the server's tree now holds ${current.treeSize} events, fewer than the ${saved.treeSize} the saved checkpoint covers (events ${current.treeSize + 1} to ${saved.treeSize} were removed, from the history and its tree)`,
    );
  const { proof } = await client.audit.consistency(saved.treeSize, { to: current.id });
  const consistency = checkpointConsistencyProblem(sha256, saved, current, proof);
  if (consistency)
    return outcome(
      `rewritten: the server's newest checkpoint ${current.id} (${current.treeSize} events) does not extend the saved one: ${consistency}`,
    );
  checked.push(
    `consistency proof from the saved checkpoint (${saved.treeSize} events) to the newest, ${current.id} (${current.treeSize} events)`,
  );

  const history: ActivityEvent[] = [];
  const tree = new InMemoryMerkleTree(sha256);
  for await (const event of client.activity({ order: "asc", limit: ACTIVITY_PAGE })) {
    history.push(event);
    tree.append(activityLeafHash(sha256, event));
  }
  historySize = history.length;
  for (const signed of [saved, current]) {
    const which = signed === saved ? "the saved checkpoint" : `the newest checkpoint ${signed.id}`;
    const gap = firstGap(history, signed.treeSize);
    if (gap)
      return outcome(
        `removed: event seq ${gap.seq} is missing from the history (the next one there is seq ${gap.next.seq}, ${gap.next.id})`,
      );
    if (history.length < signed.treeSize)
      return outcome(
        `truncated: ${which} covers ${signed.treeSize} events, the history has ${history.length}; events from seq ${history.length + 1} on were removed`,
      );
    const root = await tree.reader().root(signed.treeSize);
    if (toHex(root) !== signed.rootHash) {
      const located = await locateChange(client, signed, history, tree);
      return outcome(
        `${located.problem} (the first ${signed.treeSize} events no longer hash to ${which}'s root)`,
        located.event,
      );
    }
  }
  checked.push(
    `${history.length} events re-hashed here: their Merkle tree has the signed root of both checkpoints`,
  );
  return outcome(null);
}

/** The first seq missing from among the first `upTo` events of a history given in order, with the event found in its place. */
function firstGap(
  history: readonly ActivityEvent[],
  upTo: number,
): { seq: number; next: ActivityEvent } | null {
  for (let i = 0; i < Math.min(history.length, upTo); i += 1) {
    const event = history[i] as ActivityEvent;
    if (event.seq !== i + 1) return { seq: i + 1, next: event };
  }
  return null;
}

/**
 * Names what changed in the first `signed.treeSize` events. The leaf hashes the server recorded
 * with each event are trusted only if they reproduce the signed root; then the first position where
 * the history's own leaf differs is the event that was changed, removed or inserted.
 */
async function locateChange(
  client: ShellsClient,
  signed: Checkpoint,
  history: readonly ActivityEvent[],
  rebuilt: InMemoryMerkleTree,
): Promise<{ problem: string; event: { id: string; seq: number } | null }> {
  const recorded = new InMemoryMerkleTree(sha256);
  while (recorded.size < signed.treeSize) {
    const page = await client.audit.leaves({
      from: recorded.size,
      limit: Math.min(LEAF_PAGE, signed.treeSize - recorded.size),
    });
    if (page.leaves.length === 0) break;
    for (const leaf of page.leaves) recorded.append(fromHex(leaf));
  }
  const trustworthy =
    recorded.size >= signed.treeSize &&
    toHex(await recorded.reader().root(signed.treeSize)) === signed.rootHash;
  if (!trustworthy)
    return {
      problem:
        "rewritten: the history changed, and the server's recorded tree was rewritten too, so the changed event cannot be named",
      event: null,
    };
  for (let i = 0; i < signed.treeSize; i += 1) {
    const event = history[i] as ActivityEvent;
    if (sameHash(rebuilt.leaf(i), recorded.leaf(i))) continue;
    if (event.seq !== i + 1)
      return {
        problem: `removed: event seq ${i + 1} is missing from the history (the next one there is seq ${event.seq}, ${event.id})`,
        event: null,
      };
    return {
      problem: `rewritten: event ${event.id} (seq ${event.seq}, ${event.action}) was changed after it was recorded`,
      event: { id: event.id, seq: event.seq },
    };
  }
  return { problem: "rewritten: the history no longer matches the signed root", event: null };
}
