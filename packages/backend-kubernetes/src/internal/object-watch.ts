import type { Watch } from "@kubernetes/client-node";
import { SandboxError } from "@shells/sandbox";
import { httpStatusOf, toSandboxError } from "./api-errors.js";

/** An object kind `waitFor` can watch: its collection's path and how to list it by field. */
export interface WatchedResource<O> {
  /** Words for messages (`pod`, `persistentvolumeclaim`). */
  kind: string;
  /** The namespaced collection's path (`/api/v1/namespaces/<ns>/pods`). */
  path: string;
  list(fieldSelector: string): Promise<{ items: O[]; metadata?: { resourceVersion?: string } }>;
}

/** Objects as watch events carry them: whatever has metadata. */
type WithMetadata = { metadata?: { resourceVersion?: string } };

/** One line of a watch stream, as the API server sends it. */
interface WatchEvent<O> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: O | { kind?: string; code?: number; reason?: string; message?: string };
}

/** Pause before watching again after a watch broke without an answer (a network blip). */
const REWATCH_DELAY_MS = 200;

/**
 * Waits until `check` says an object is where the caller wants it. `check` sees the object (null
 * once it is gone) and returns a value to finish with, `undefined` to keep waiting, or throws to
 * give up.
 *
 * It lists the object first (its state now, and the resource version to watch from), then watches
 * it. A watch the server closes (they end every few minutes) is opened again from the last
 * version seen; a `410 Gone` — as an `ERROR` event carrying a `Status`, or as the watch request's
 * own answer — means that version is too old to watch from, so the object is listed again and the
 * watch starts over from the new list. Past `timeoutMs` it throws `failed` with `onTimeout`'s words.
 */
export function waitFor<O extends WithMetadata, T>(
  watcher: Watch,
  resource: WatchedResource<O>,
  name: string,
  check: (object: O | null) => T | undefined,
  timeoutMs: number,
  onTimeout: () => string,
): Promise<T> {
  const fieldSelector = `metadata.name=${name}`;
  return new Promise<T>((resolve, reject) => {
    let finished = false;
    let controller: AbortController | null = null;
    let resourceVersion = "";
    const finish = (outcome: { value: T } | { error: Error }) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      controller?.abort();
      if ("value" in outcome) resolve(outcome.value);
      else reject(outcome.error);
    };
    /** Runs `check`, finishing when it answers; true when done. */
    const see = (object: O | null): boolean => {
      try {
        const value = check(object);
        if (value !== undefined) finish({ value });
      } catch (error) {
        finish({ error: error instanceof Error ? error : new Error(String(error)) });
      }
      return finished;
    };
    const timer = setTimeout(
      () => finish({ error: new SandboxError("failed", onTimeout()) }),
      timeoutMs,
    );

    const list = async () => {
      if (finished) return;
      try {
        const answer = await resource.list(fieldSelector);
        resourceVersion = answer.metadata?.resourceVersion ?? "";
        if (see(answer.items[0] ?? null)) return;
        await watch();
      } catch (error) {
        finish({ error: toSandboxError(error, `listing ${resource.kind} ${name}`) });
      }
    };

    const watch = async () => {
      if (finished) return;
      let relist = false;
      controller = await watcher.watch(
        resource.path,
        { fieldSelector, resourceVersion, allowWatchBookmarks: true },
        (type: string, object: WatchEvent<O>["object"]) => {
          if (finished || relist) return;
          const version = (object as WithMetadata).metadata?.resourceVersion;
          switch (type as WatchEvent<O>["type"]) {
            case "ADDED":
            case "MODIFIED":
              if (version) resourceVersion = version;
              see(object as O);
              break;
            case "DELETED":
              if (version) resourceVersion = version;
              see(null);
              break;
            case "BOOKMARK":
              if (version) resourceVersion = version;
              break;
            case "ERROR": {
              const status = object as { code?: number; message?: string };
              if (status.code === 410) {
                relist = true;
                controller?.abort();
              } else {
                finish({
                  error: new SandboxError(
                    "failed",
                    `watching ${resource.kind} ${name} failed: ${status.message ?? `code ${status.code ?? "?"}`}`,
                  ),
                });
              }
              break;
            }
          }
        },
        (error: unknown) => {
          if (finished) return;
          if (relist || httpStatusOf(error) === 410) {
            void list();
            return;
          }
          const status = httpStatusOf(error);
          if (status !== undefined && status >= 400 && status < 500) {
            finish({ error: toSandboxError(error, `watching ${resource.kind} ${name}`) });
            return;
          }
          // The server ended the watch (they do, every few minutes) or the connection broke:
          // watch again from the last version seen.
          setTimeout(() => void watch(), error ? REWATCH_DELAY_MS : 0);
        },
      );
      if (finished) controller.abort();
    };

    void list();
  });
}
