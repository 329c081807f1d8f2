import { ERROR_STATUS, ROUTES, type ErrorBody, type Shell } from "@shells/contract";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import { AsyncLocalStorage } from "node:async_hooks";
import { newId } from "../ids.js";
import {
  abandonedKeysAcrossOrgs,
  finishKey,
  noteKeyEffects,
  releaseKey,
  renewKeyLeases,
  takeOverKey,
  type IdempotencyRow,
  type KeyEffects,
} from "../store/idempotency-store.js";
import type { Database } from "../store/schema.js";

/** How long a process's claim on a pending key holds without renewal (default). */
export const IDEMPOTENCY_LEASE_MS = 60_000;

/** Options of the idempotency service. */
export interface IdempotencyServiceOptions {
  db: Kysely<Database>;
  logger: Logger;
  /** This process's boot id (default: a fresh one). */
  bootId?: string;
  /** How long a claim holds without renewal, ms (default {@link IDEMPOTENCY_LEASE_MS}). */
  leaseMs?: number;
}

/** How the keys of dead processes were resolved. */
export interface KeyRecovery {
  /** Answered with the first request's outcome (the shell it created). */
  answered: number;
  /** Answered `request_interrupted`: the request made something, its answer is not knowable. */
  interrupted: number;
  /** Forgotten: the request made nothing a retry would repeat; a retry runs it afresh. */
  released: number;
}

/** One of an org's shells as the API shows it, or null when it does not exist. */
export type DescribeShell = (orgId: string, shellId: string) => Promise<Shell | null>;

/** A keyed request this process runs now. */
interface KeyedRequest {
  orgId: string;
  key: string;
  effects: KeyEffects;
}

/**
 * Who runs the request under each pending `Idempotency-Key`, so that a crash cannot leave a key
 * pending forever.
 *
 * A pending key names its owner, this process's boot id, and a lease the owner renews while it
 * runs (`start`). What a keyed request makes that a retry would make again (a shell) is noted on
 * the key before it is made (`noteShell`). A key whose owner is dead is resolved (`recover`): to the
 * first request's outcome where it is knowable (the shell a create made: the create's answer, with
 * the shell as it is now), to `request_interrupted` naming what exists where the request made
 * something but its answer is not knowable (a fork, a run), else released, so a retry with the same
 * key runs the request afresh (deletes and actions, which a retry may repeat safely).
 *
 * Which owners are dead: over a store no other process uses (SQLite, one control plane), every
 * other owner at start-up; over a store shared by replicas, those whose lease ran out.
 */
export class IdempotencyService {
  readonly bootId: string;
  /** The store the keys are in. */
  readonly db: Kysely<Database>;
  readonly #logger: Logger;
  readonly #leaseMs: number;
  readonly #current = new AsyncLocalStorage<KeyedRequest>();
  #timer: NodeJS.Timeout | null = null;

  constructor(options: IdempotencyServiceOptions) {
    this.db = options.db;
    this.#logger = options.logger;
    this.bootId = options.bootId ?? newId("boot", 12);
    this.#leaseMs = options.leaseMs ?? IDEMPOTENCY_LEASE_MS;
  }

  /** When a claim made (or renewed) now runs out. */
  leaseExpiresAt(): string {
    return new Date(Date.now() + this.#leaseMs).toISOString();
  }

  /** Runs the request of a key this process claimed; `noteShell` inside it notes on that key. */
  runKeyed<T>(orgId: string, key: string, run: () => Promise<T>): Promise<T> {
    return this.#current.run({ orgId, key, effects: { shells: [] } }, run);
  }

  /**
   * Notes on the running request's key (if it has one) that it is about to make this shell. Call
   * before the shell's row exists, or in `db`, the transaction that writes it: a crash leaves at
   * most a note of a shell that does not exist, which recovery ignores, never a shell the key does
   * not know.
   */
  async noteShell(shellId: string, db: Kysely<Database> = this.db): Promise<void> {
    const request = this.#current.getStore();
    if (!request) return;
    if (!request.effects.shells.includes(shellId)) request.effects.shells.push(shellId);
    await noteKeyEffects(db, request.orgId, request.key, request.effects);
  }

  /**
   * Runs `heartbeat` every third of the lease, until `stop`: this process's claims stay alive, and
   * keys of other processes whose lease ran out (a replica that died) are resolved.
   */
  start(describeShell: DescribeShell): void {
    this.stop();
    this.#timer = setInterval(() => {
      this.heartbeat(describeShell).catch((error: unknown) =>
        this.#logger.error({ err: error }, "renewing idempotency leases failed"),
      );
    }, this.#leaseMs / 3);
    this.#timer.unref();
  }

  /** Renews the lease of every key this process holds pending, then resolves expired ones. */
  async heartbeat(describeShell: DescribeShell): Promise<void> {
    await renewKeyLeases(this.db, this.bootId, this.leaseExpiresAt());
    await this.recover({ othersMayBeAlive: true, describeShell });
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * Resolves the pending keys of dead processes (see the class). `othersMayBeAlive`: false when no
   * other process uses the store (every other owner is dead now); true over a shared store, where
   * only an expired lease says so. Call after reconciliation, so the shells it looks at are settled.
   */
  async recover(options: {
    othersMayBeAlive: boolean;
    describeShell: DescribeShell;
  }): Promise<KeyRecovery> {
    const counts: KeyRecovery = { answered: 0, interrupted: 0, released: 0 };
    const abandoned = await abandonedKeysAcrossOrgs(
      this.db,
      this.bootId,
      options.othersMayBeAlive ? new Date().toISOString() : null,
    );
    for (const row of abandoned) {
      if (!(await takeOverKey(this.db, row, this.bootId))) continue;
      const made: Shell[] = [];
      for (const shellId of effectsOf(row).shells) {
        const shell = await options.describeShell(row.org_id, shellId);
        if (shell) made.push(shell);
      }
      const created = made[0];
      if (made.length === 0) {
        await releaseKey(this.db, row.org_id, row.key);
        counts.released += 1;
      } else if (row.operation === "createShell" && made.length === 1 && created) {
        await finishKey(this.db, row.org_id, row.key, ROUTES.createShell.successStatus, created);
        counts.answered += 1;
      } else {
        const ids = made.map((shell) => shell.id);
        const body: ErrorBody = {
          error: {
            code: "request_interrupted",
            message: `The first request with this Idempotency-Key was cut off by a restart of the control plane after it made shell${ids.length === 1 ? "" : "s"} ${ids.join(", ")}; check ${ids.length === 1 ? "it" : "them"} before asking again with a new key.`,
            details: { shells: ids },
            requestId: row.request_id ?? "unknown",
          },
        };
        await finishKey(this.db, row.org_id, row.key, ERROR_STATUS.request_interrupted, body);
        counts.interrupted += 1;
      }
    }
    if (abandoned.length > 0)
      this.#logger.info(counts, "resolved idempotency keys of a previous control-plane process");
    return counts;
  }
}

function effectsOf(row: IdempotencyRow): KeyEffects {
  if (row.effects === null) return { shells: [] };
  const parsed = JSON.parse(row.effects) as Partial<KeyEffects>;
  return { shells: Array.isArray(parsed.shells) ? parsed.shells : [] };
}
