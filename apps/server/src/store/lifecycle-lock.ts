import type pg from "pg";

/**
 * Serialises lifecycle work on one key (a shell id) across everyone who can change it. The
 * in-process keyed mutex serves a single server; a store shared by several servers needs a lock
 * they all see (see {@link AdvisoryLifecycleLock}).
 */
export interface LifecycleLock {
  /** Runs `fn` once every earlier holder of `key` has finished, and returns its result. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

/**
 * A lifecycle lock every server on one PostgreSQL store sees: a session-level advisory lock on a
 * connection of its own, held while the work runs. Waiters of this process queue in `local` first,
 * so one key never holds more than one connection here. A server that dies mid-work loses its
 * connection, and PostgreSQL releases its locks with it: nothing stays locked by the dead.
 */
export class AdvisoryLifecycleLock implements LifecycleLock {
  constructor(
    private readonly local: LifecycleLock,
    /** Connections that hold locks; the work itself runs on the store's own pool. */
    private readonly pool: pg.Pool,
  ) {}

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.local.run(key, async () => {
      const client = await this.pool.connect();
      const id = `lifecycle:${key}`;
      let healthy = true;
      try {
        await client.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", [id]);
        try {
          return await fn();
        } finally {
          await client
            .query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [id])
            .catch(() => {
              healthy = false;
            });
        }
      } finally {
        // A connection whose unlock failed may still hold the lock: closing it releases it.
        client.release(!healthy);
      }
    });
  }
}
