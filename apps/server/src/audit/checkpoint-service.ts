import {
  CHECKPOINT_FORMAT,
  checkpointSignedBytes,
  toHex,
  type Checkpoint,
  type CheckpointConsistency,
  type EventProof,
  type Page,
  type TreeLeaves,
} from "@shells/contract";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely, Selectable } from "kysely";
import { z } from "zod";
import { AppError } from "../errors.js";
import { newId, nowIso } from "../ids.js";
import { KeyedMutex } from "../orchestrator/keyed-mutex.js";
import { SYSTEM_ORG } from "../services/activity-service.js";
import { decodeCursor, encodeCursor } from "../services/cursor.js";
import type { AuditCheckpointTable, Database } from "../store/schema.js";
import type { ActivityTree } from "./activity-tree.js";
import type { CheckpointSigner } from "./checkpoint-signer.js";

function toCheckpoint(row: Selectable<AuditCheckpointTable>): Checkpoint {
  return {
    id: row.id,
    format: CHECKPOINT_FORMAT,
    orgId: row.org_id,
    treeSize: row.tree_size,
    rootHash: row.root_hash,
    time: row.time,
    keyId: row.key_id,
    signature: row.signature,
  };
}

/** What the checkpoint service is built from. */
export interface CheckpointServiceOptions {
  db: Kysely<Database>;
  tree: ActivityTree;
  signer: CheckpointSigner;
  logger: FastifyBaseLogger;
}

/**
 * Signed checkpoints of each org's activity tree, and proofs against them. A checkpoint is signed
 * on demand, on a schedule when the org's tree grew since its last one, and whenever a proof needs
 * one that covers an event. Checkpoints are stored and listable; listeners (`onCheckpoint`) hear
 * of each new one, so a dispatcher can hand them to someone outside the server.
 */
export class CheckpointService {
  readonly #db: Kysely<Database>;
  readonly #tree: ActivityTree;
  readonly #signer: CheckpointSigner;
  readonly #logger: FastifyBaseLogger;
  readonly #lock = new KeyedMutex();
  readonly #listeners = new Set<(checkpoint: Checkpoint) => void>();
  #timer: NodeJS.Timeout | null = null;

  constructor(options: CheckpointServiceOptions) {
    this.#db = options.db;
    this.#tree = options.tree;
    this.#signer = options.signer;
    this.#logger = options.logger;
  }

  /** The public keys checkpoints are signed with. */
  publicKeys() {
    return { keys: this.#signer.publicKeys() };
  }

  /** Calls `listener` with every checkpoint signed from now on; returns the unsubscribe. */
  onCheckpoint(listener: (checkpoint: Checkpoint) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Signs a checkpoint of the org's tree as it is now, or answers the newest one when the tree
   * has not grown since it.
   */
  async create(orgId: string): Promise<Checkpoint> {
    return this.#lock.run(orgId, async () => {
      // Subtrees of the first `size` leaves never change once written, so the root read below is
      // the root of exactly this size even while events are being recorded.
      const size = await this.#tree.size(orgId);
      const newest = await this.#newestRow(orgId);
      if (newest && newest.tree_size === size) return toCheckpoint(newest);
      const fields = {
        orgId,
        treeSize: size,
        rootHash: toHex(await this.#tree.reader(orgId).root(size)),
        time: nowIso(),
      };
      const row: Selectable<AuditCheckpointTable> = {
        id: newId("cp", 14),
        org_id: orgId,
        tree_size: fields.treeSize,
        root_hash: fields.rootHash,
        time: fields.time,
        key_id: this.#signer.keyId,
        signature: this.#signer.sign(checkpointSignedBytes(fields)),
      };
      await this.#db.insertInto("audit_checkpoints").values(row).execute();
      const checkpoint = toCheckpoint(row);
      for (const listener of this.#listeners) listener(checkpoint);
      return checkpoint;
    });
  }

  /** The org's checkpoints, newest (largest) first. */
  async list(orgId: string, limit: number, cursor?: string): Promise<Page<Checkpoint>> {
    let q = this.#db.selectFrom("audit_checkpoints").selectAll().where("org_id", "=", orgId);
    if (cursor) {
      const { size, time } = decodeCursor(
        cursor,
        z.strictObject({ size: z.int().min(0), time: z.string().max(64) }),
      );
      q = q.where((eb) =>
        eb.or([
          eb("tree_size", "<", size),
          eb.and([eb("tree_size", "=", size), eb("time", "<", time)]),
        ]),
      );
    }
    const rows = await q
      .orderBy("tree_size", "desc")
      .orderBy("time", "desc")
      .limit(limit + 1)
      .execute();
    const items = rows.slice(0, limit).map(toCheckpoint);
    const last = items.at(-1);
    return {
      items,
      nextCursor:
        rows.length > limit && last ? encodeCursor({ size: last.treeSize, time: last.time }) : null,
    };
  }

  /** One of the org's checkpoints; another org's is not found. */
  async get(orgId: string, id: string): Promise<Checkpoint> {
    const row = await this.#db
      .selectFrom("audit_checkpoints")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row)
      throw new AppError("checkpoint_not_found", `No checkpoint ${id}.`, { checkpoint: id });
    return toCheckpoint(row);
  }

  /**
   * The newest checkpoint when it covers the first `size` events, else a new one. Fails with
   * `not_in_checkpoint` when the tree itself does not hold that many events.
   */
  async covering(orgId: string, size: number): Promise<Checkpoint> {
    const newest = await this.#newestRow(orgId);
    const checkpoint =
      newest && newest.tree_size >= size ? toCheckpoint(newest) : await this.create(orgId);
    if (checkpoint.treeSize < size)
      throw new AppError(
        "not_in_checkpoint",
        `The activity tree holds ${checkpoint.treeSize} events, not ${size}.`,
        { treeSize: checkpoint.treeSize },
      );
    return checkpoint;
  }

  /** The inclusion proof of one event, against `checkpointId` or a checkpoint that covers it. */
  async eventProof(orgId: string, eventId: string, checkpointId?: string): Promise<EventProof> {
    const event = await this.#db
      .selectFrom("activity")
      .select("seq")
      .where("org_id", "=", orgId)
      .where("id", "=", eventId)
      .executeTakeFirst();
    if (!event) throw new AppError("event_not_found", `No event ${eventId}.`, { event: eventId });
    const checkpoint =
      checkpointId === undefined
        ? await this.covering(orgId, event.seq)
        : await this.get(orgId, checkpointId);
    if (checkpoint.treeSize < event.seq)
      throw new AppError(
        "not_in_checkpoint",
        `Checkpoint ${checkpoint.id} covers events 1 to ${checkpoint.treeSize}; event ${eventId} is number ${event.seq}.`,
        { treeSize: checkpoint.treeSize, seq: event.seq },
      );
    const [proof] = await this.inclusionProofs(
      orgId,
      [{ id: eventId, seq: event.seq }],
      checkpoint,
    );
    return { proof: proof as EventProof["proof"], checkpoint };
  }

  /** Inclusion proofs of `events` against `checkpoint` (which must cover them), sharing lookups. */
  async inclusionProofs(
    orgId: string,
    events: readonly { id: string; seq: number }[],
    checkpoint: Checkpoint,
  ): Promise<EventProof["proof"][]> {
    const reader = this.#tree.reader(orgId);
    const proofs: EventProof["proof"][] = [];
    for (const event of events) {
      const index = event.seq - 1;
      proofs.push({
        eventId: event.id,
        leafIndex: index,
        treeSize: checkpoint.treeSize,
        leafHash: toHex(await reader.subtreeHash(index, index + 1)),
        path: (await reader.inclusionProof(index, checkpoint.treeSize)).map(toHex),
      });
    }
    return proofs;
  }

  /** The proof that checkpoint `toId` (the newest when left out) extends the first `fromSize` events. */
  async consistency(
    orgId: string,
    fromSize: number,
    toId?: string,
  ): Promise<CheckpointConsistency> {
    const checkpoint =
      toId === undefined ? await this.covering(orgId, 0) : await this.get(orgId, toId);
    if (fromSize > checkpoint.treeSize)
      throw new AppError(
        "not_in_checkpoint",
        `Checkpoint ${checkpoint.id} covers ${checkpoint.treeSize} events, fewer than ${fromSize}.`,
        { treeSize: checkpoint.treeSize, from: fromSize },
      );
    const path = await this.#tree.reader(orgId).consistencyProof(fromSize, checkpoint.treeSize);
    return {
      proof: { fromSize, toSize: checkpoint.treeSize, path: path.map(toHex) },
      checkpoint,
    };
  }

  /** Stored leaf hashes from `from` on. */
  async leaves(orgId: string, from: number, limit: number): Promise<TreeLeaves> {
    const [leaves, treeSize] = await Promise.all([
      this.#tree.leaves(orgId, from, limit),
      this.#tree.size(orgId),
    ]);
    return { from, leaves: leaves.map(toHex), treeSize };
  }

  /** Signs a checkpoint for every org whose tree grew since its newest checkpoint. */
  async checkpointGrown(): Promise<Checkpoint[]> {
    const orgs = await this.#db.selectFrom("orgs").select("id").execute();
    const signed: Checkpoint[] = [];
    for (const orgId of [...orgs.map((o) => o.id), SYSTEM_ORG]) {
      const [size, newest] = await Promise.all([this.#tree.size(orgId), this.#newestRow(orgId)]);
      if (size === 0 || size === newest?.tree_size) continue;
      signed.push(await this.create(orgId));
    }
    return signed;
  }

  /** Signs checkpoints of grown trees every `intervalMs` until {@link stop}. */
  start(intervalMs: number): void {
    this.stop();
    this.#timer = setInterval(() => {
      this.checkpointGrown().catch((error: unknown) =>
        this.#logger.error({ err: error }, "scheduled activity checkpoint failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the schedule. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #newestRow(orgId: string) {
    return this.#db
      .selectFrom("audit_checkpoints")
      .selectAll()
      .where("org_id", "=", orgId)
      .orderBy("tree_size", "desc")
      .orderBy("time", "desc")
      .limit(1)
      .executeTakeFirst();
  }
}
