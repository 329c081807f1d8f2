import type { FastifyBaseLogger } from "fastify";

/** When a window's repeats happened, as its closing event records them. */
export interface WindowSpan {
  since: string;
  until: string;
}

/** How a {@link WindowedLog} keys, weighs and writes its items. */
export interface WindowedLogOptions<T> {
  /** Length of an aggregation window, ms. */
  windowMs: number;
  /** Most windows open at once; past it, new keys share their `overflowKey`'s window. */
  maxOpenWindows?: number | undefined;
  logger: FastifyBaseLogger;
  /** What a failed write could not record, for the log line ("proxy decisions"). */
  what: string;
  /** Items with equal keys share a window. */
  keyOf(item: T): string;
  /** The shared window of an item once too many are open. */
  overflowKey(item: T): string;
  /** What an item adds to its window's sum (bytes moved); 0 when left out. */
  weight?(item: T): number;
  /**
   * Writes one event: the window's first item when it opens (`count` 1, its own weight), or at
   * the window's close the repeats after it, with the last of them, their count, summed weight
   * and span.
   */
  write(first: T, last: T, count: number, sum: number, span?: WindowSpan): Promise<void>;
}

interface OpenWindow<T> {
  first: T;
  last: T;
  /** Items after the first, not yet written. */
  repeats: number;
  sum: number;
  openedAt: string;
  timer: NodeJS.Timeout;
}

const DEFAULT_MAX_OPEN_WINDOWS = 10_000;

/**
 * Writes a stream of items to the activity history in bounded form, for sources a caller can
 * trigger in a loop (refused logins, a shell's connections): one row per item would let anyone
 * grow an org's hash chain without limit. The first item per key in a window is written at once
 * with a count of 1; the repeats in that window are counted (and weighed) and written as one more
 * event when the window closes, or on `flush`/`close`. The counts of all events add up to the
 * number of items, and memory stays bounded by `maxOpenWindows`.
 */
export class WindowedLog<T> {
  readonly #windows = new Map<string, OpenWindow<T>>();

  constructor(private readonly options: WindowedLogOptions<T>) {}

  /** Records one item: written now when it opens a window, else counted into the window. */
  async record(item: T): Promise<void> {
    const { options } = this;
    let key = options.keyOf(item);
    if (
      !this.#windows.has(key) &&
      this.#windows.size >= (options.maxOpenWindows ?? DEFAULT_MAX_OPEN_WINDOWS)
    )
      key = options.overflowKey(item);
    const weight = options.weight?.(item) ?? 0;
    const open = this.#windows.get(key);
    if (open) {
      open.repeats += 1;
      open.sum += weight;
      open.last = item;
      return;
    }
    const timer = setTimeout(() => {
      this.#closeWindow(key).catch((error: unknown) =>
        options.logger.error({ err: error }, `could not record ${options.what}`),
      );
    }, options.windowMs);
    timer.unref();
    this.#windows.set(key, {
      first: item,
      last: item,
      repeats: 0,
      sum: 0,
      openedAt: new Date().toISOString(),
      timer,
    });
    await options.write(item, item, 1, weight);
  }

  /** Writes the open windows whose first item matches now (e.g. one shell's, as it stops). */
  async flush(matches: (first: T) => boolean): Promise<void> {
    for (const [key, open] of [...this.#windows])
      if (matches(open.first)) await this.#closeWindow(key);
  }

  /** Writes every open window's count now (at shutdown). */
  async close(): Promise<void> {
    for (const key of [...this.#windows.keys()]) await this.#closeWindow(key);
  }

  async #closeWindow(key: string): Promise<void> {
    const open = this.#windows.get(key);
    if (!open) return;
    clearTimeout(open.timer);
    this.#windows.delete(key);
    if (open.repeats > 0)
      await this.options.write(open.first, open.last, open.repeats, open.sum, {
        since: open.openedAt,
        until: new Date().toISOString(),
      });
  }
}
