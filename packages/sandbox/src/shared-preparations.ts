import type { SandboxProgress } from "./backend.js";

type Listener = (progress: SandboxProgress) => void;

/**
 * Slow preparations (image builds) keyed by what they prepare: a second caller for a key already
 * under way joins it instead of starting another, and every caller sees each step from the time it
 * joined. For backends implementing `prepareLanguage`.
 */
export class SharedPreparations<K> {
  readonly #running = new Map<K, { done: Promise<void>; listeners: Set<Listener> }>();

  /** Runs `task` for `key`, or joins the run under way; settles as that run does. */
  async run(
    key: K,
    onProgress: Listener,
    task: (report: Listener) => Promise<void>,
  ): Promise<void> {
    let running = this.#running.get(key);
    if (running) running.listeners.add(onProgress);
    else {
      const listeners = new Set<Listener>([onProgress]);
      const report = (progress: SandboxProgress) => {
        for (const listener of listeners) listener(progress);
      };
      const done = task(report).finally(() => this.#running.delete(key));
      running = { done, listeners };
      this.#running.set(key, running);
    }
    try {
      await running.done;
    } finally {
      running.listeners.delete(onProgress);
    }
  }
}
