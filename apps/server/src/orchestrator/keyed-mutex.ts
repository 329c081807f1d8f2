import type { LifecycleLock } from "../store/lifecycle-lock.js";

/** Runs tasks one at a time per key (here: per shell), in arrival order, within this process. */
export class KeyedMutex implements LifecycleLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** Runs `task` after every earlier task for `key` has settled. */
  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const current = previous.then(task, task);
    const tail = current.catch(() => undefined);
    this.#tails.set(key, tail);
    try {
      return await current;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
