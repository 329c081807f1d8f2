/**
 * Serialises lifecycle work on one key (a shell id) across everyone who can change it. The
 * in-process keyed mutex serves a single server; a store shared by several servers needs a lock
 * they all see (a row lease).
 */
export interface LifecycleLock {
  /** Runs `fn` once every earlier holder of `key` has finished, and returns its result. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T>;
}
