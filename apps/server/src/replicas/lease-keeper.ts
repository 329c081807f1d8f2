import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { claimLease, releaseLease } from "../store/leases-store.js";
import type { Database } from "../store/schema.js";

/** What a lease keeper needs. */
export interface LeaseKeeperOptions {
  db: Kysely<Database>;
  /** The lease's name (one kind of background work). */
  name: string;
  /**
   * True when this server is the only one on its store (SQLite): the lease is held from the start
   * and never lapses, and no row is written.
   */
  exclusive: boolean;
  /** How long the lease lasts unrenewed, ms; it is renewed (or tried for) every third of it. */
  ttlMs: number;
  logger: Logger;
  /** Starts the work, once the lease is held (awaited before the lease is counted as running). */
  onAcquire(): Promise<void>;
  /** Stops the work: the lease was lost or given up. Must be safe to call when nothing runs. */
  onLose(): void;
}

/** This process's name in the `leases` table: host, pid and a random part (pids are reused). */
export function leaseHolderId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
}

/**
 * Holds one lease for as long as this server runs, and runs its work only while it holds it. Of
 * several servers over one store, exactly one holds the lease; the others try again every third
 * of its lifetime, so when the holder dies (no renewal) another takes over within `ttlMs` plus a
 * third of it. A holder that cannot renew before its own lease would lapse stops the work first,
 * so two servers never run it at once for longer than the store takes to answer.
 */
export class LeaseKeeper {
  readonly holder = leaseHolderId();
  #held = false;
  /** When the lease was last taken or renewed, by this process's monotonic clock, ms. */
  #renewedAt = 0;
  #timer: NodeJS.Timeout | null = null;
  #tick: Promise<void> | null = null;
  /** The work's start-up, while it runs (renewals go on meanwhile: it may outlast the lease). */
  #starting: Promise<void> | null = null;
  #closed = false;

  constructor(private readonly options: LeaseKeeperOptions) {}

  /** Whether this server holds the lease (and runs its work) now. */
  get held(): boolean {
    return this.#held;
  }

  /**
   * Tries for the lease now, starting the work if it is free (awaited: a server that finds it free
   * has run its start-up work before it serves), then keeps trying or renewing on a timer.
   */
  async start(): Promise<void> {
    if (this.options.exclusive) {
      // The only server: its start-up work fails the start, as it would without leases.
      this.#held = true;
      await this.options.onAcquire();
      return;
    }
    await this.#runTick();
    await this.#starting;
    const every = Math.max(100, Math.floor(this.options.ttlMs / 3));
    this.#timer = setInterval(() => {
      this.#checkLapse();
      void this.#runTick();
    }, every);
    this.#timer.unref();
  }

  /** Stops the work (if held) and gives the lease up, so another server takes it at once. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#tick;
    await this.#starting;
    const wasHeld = this.#held;
    this.#lose();
    if (wasHeld && !this.options.exclusive)
      await releaseLease(this.options.db, this.options.name, this.holder).catch((error: unknown) =>
        this.options.logger.warn({ err: error, lease: this.options.name }, "lease not released"),
      );
  }

  #runTick(): Promise<void> {
    this.#tick ??= this.#renewOrTry().finally(() => {
      this.#tick = null;
    });
    return this.#tick;
  }

  async #renewOrTry(): Promise<void> {
    const { db, name, ttlMs, logger } = this.options;
    const askedAt = performance.now();
    let holds: boolean;
    try {
      holds = (await claimLease(db, name, this.holder, ttlMs)) !== undefined;
    } catch (error) {
      logger.warn(
        { err: error, lease: name },
        "lease not renewed or claimed: the store did not answer",
      );
      return;
    }
    if (this.#closed) return;
    if (holds) {
      this.#renewedAt = askedAt;
      if (!this.#held) this.#acquired();
    } else if (this.#held) {
      logger.error({ lease: name }, "lease taken by another server: stopping its work");
      this.#lose();
    }
  }

  /**
   * Unrenewed, the lease lapses `ttlMs` after its last renewal (by the store's clock); the work
   * stops once half of that has passed, checked every third, so it has stopped before another
   * server can take the lease, even when the store hangs instead of answering.
   */
  #checkLapse(): void {
    if (!this.#held || performance.now() - this.#renewedAt <= this.options.ttlMs / 2) return;
    this.options.logger.error(
      { lease: this.options.name },
      "lease not renewed in time: stopping its work until it is held again",
    );
    this.#lose();
  }

  #acquired(): void {
    const { name, logger } = this.options;
    this.#held = true;
    logger.info({ lease: name, holder: this.holder }, "lease held: running its work");
    this.#starting = this.options
      .onAcquire()
      .then(
        // Lost (or closed) while the work was starting: what it started stops again.
        () => {
          if (!this.#held || this.#closed) this.options.onLose();
        },
        async (error: unknown) => {
          logger.error({ err: error, lease: name }, "the lease's work failed to start; retrying");
          this.#lose();
          await releaseLease(this.options.db, name, this.holder).catch(() => undefined);
        },
      )
      .finally(() => {
        this.#starting = null;
      });
  }

  #lose(): void {
    this.#held = false;
    this.options.onLose();
  }
}
