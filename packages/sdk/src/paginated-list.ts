import type { Page } from "@shells/contract";

/** Fetches the page that starts at `cursor` (the first page when `cursor` is undefined). */
export type PageFetcher<T> = (cursor: string | undefined) => Promise<Page<T>>;

/**
 * A cursor-paginated list. Iterate it with `for await` to get every item across all pages (pages
 * are fetched lazily, one request at a time, as the loop advances); call {@link page} for just the
 * first page, or {@link pages} to walk page by page.
 *
 * Nothing is requested until one of these is used, and every use starts again from the first page.
 */
export class PaginatedList<T> implements AsyncIterable<T> {
  readonly #fetchPage: PageFetcher<T>;
  readonly #startCursor: string | undefined;

  /** @param startCursor the cursor of the first page, when the query named one. */
  constructor(fetchPage: PageFetcher<T>, startCursor?: string) {
    this.#fetchPage = fetchPage;
    this.#startCursor = startCursor;
  }

  /** The first page: its items and the cursor of the next one (null on the last page). */
  page(): Promise<Page<T>> {
    return this.#fetchPage(this.#startCursor);
  }

  /** Every page in order, following `nextCursor` until it is null. */
  async *pages(): AsyncGenerator<Page<T>, void, undefined> {
    let cursor = this.#startCursor;
    for (;;) {
      const page = await this.#fetchPage(cursor);
      yield page;
      if (page.nextCursor === null) return;
      cursor = page.nextCursor;
    }
  }

  /** Every item on every page, in order. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    for await (const page of this.pages()) yield* page.items;
  }

  /** Collects every item on every page into an array. Mind the size of what you ask for. */
  async toArray(): Promise<T[]> {
    const items: T[] = [];
    for await (const item of this) items.push(item);
    return items;
  }
}
