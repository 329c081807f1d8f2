import type {
  Checkpoint,
  CheckpointConsistency,
  CheckpointKey,
  EventProof,
  Page,
  TreeLeaves,
} from "@shells/contract";
import { segment, type ApiCall } from "./internal/api-call.js";
import { PaginatedList } from "./paginated-list.js";
import type { RequestOptions } from "./shells-client.js";

/**
 * Signed checkpoints of the org's activity history (`shells.audit`): the server's public keys,
 * checkpoints on demand, and inclusion and consistency proofs. Verify what comes back with the
 * contract's `checkpointSignatureProblem`, `eventInclusionProblem` and
 * `checkpointConsistencyProblem` — a proof is only worth what its check on your side is.
 *
 * ```ts
 * const saved = await shells.audit.checkpoint(); // keep this outside the server
 * // later:
 * const { proof, checkpoint } = await shells.audit.consistency(saved.treeSize);
 * ```
 */
export class AuditApi {
  readonly #call: ApiCall;

  /** @internal The client builds this; use `shells.audit`. */
  constructor(call: ApiCall) {
    this.#call = call;
  }

  /** The public keys checkpoints are signed with (`/.well-known/shells-checkpoint-keys`). */
  async keys(options: RequestOptions = {}): Promise<CheckpointKey[]> {
    const { keys } = await this.#call<{ keys: CheckpointKey[] }>(
      "GET",
      "/.well-known/shells-checkpoint-keys",
      options,
    );
    return keys;
  }

  /** Signs a checkpoint of the history now (the newest one when nothing was added since). */
  checkpoint(options: RequestOptions = {}): Promise<Checkpoint> {
    return this.#call<Checkpoint>("POST", "/api/v1/audit/checkpoints", options);
  }

  /** The org's checkpoints, newest first; iterate with `for await`, or `.page()`. */
  checkpoints(
    query: { limit?: number } = {},
    options: RequestOptions = {},
  ): PaginatedList<Checkpoint> {
    return new PaginatedList<Checkpoint>((cursor) =>
      this.#call<Page<Checkpoint>>("GET", "/api/v1/audit/checkpoints", {
        ...options,
        query: { limit: query.limit, cursor },
      }),
    );
  }

  /** One checkpoint by id. */
  getCheckpoint(checkpointId: string, options: RequestOptions = {}): Promise<Checkpoint> {
    return this.#call<Checkpoint>(
      "GET",
      `/api/v1/audit/checkpoints/${segment(checkpointId)}`,
      options,
    );
  }

  /**
   * The inclusion proof of one event: against `checkpoint` when given, else against a checkpoint
   * that covers it (signed on demand when needed).
   */
  eventProof(
    eventId: string,
    query: { checkpoint?: string } = {},
    options: RequestOptions = {},
  ): Promise<EventProof> {
    return this.#call<EventProof>("GET", `/api/v1/audit/events/${segment(eventId)}/proof`, {
      ...options,
      query: { checkpoint: query.checkpoint },
    });
  }

  /** The proof that checkpoint `to` (the newest when left out) extends the first `fromSize` events. */
  consistency(
    fromSize: number,
    query: { to?: string } = {},
    options: RequestOptions = {},
  ): Promise<CheckpointConsistency> {
    return this.#call<CheckpointConsistency>("GET", "/api/v1/audit/consistency", {
      ...options,
      query: { from: fromSize, to: query.to },
    });
  }

  /** Leaf hashes of the org's tree as recorded, from leaf `from` on (at most `limit`, ≤ 5000). */
  leaves(
    query: { from?: number; limit?: number } = {},
    options: RequestOptions = {},
  ): Promise<TreeLeaves> {
    return this.#call<TreeLeaves>("GET", "/api/v1/audit/leaves", {
      ...options,
      query: { from: query.from, limit: query.limit },
    });
  }
}
