import type { HttpMethod } from "@shells/contract";
import type { ServerSentEvent } from "./server-sent-events.js";

/** A query string value; `undefined` leaves the parameter out. */
export type QueryValue = string | number | undefined;

/** What one request carries besides its method and path. */
export interface CallOptions {
  query?: Record<string, QueryValue> | undefined;
  /** A JSON body. */
  body?: unknown;
  /** A raw body of bytes (file contents, a tar archive), sent instead of `body`. */
  rawBody?: { contentType: string; bytes: Uint8Array } | undefined;
  /** `bytes` answers the response body as a `Uint8Array` instead of parsing JSON. */
  responseType?: "json" | "bytes" | undefined;
  idempotencyKey?: string | undefined;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/**
 * One authenticated request to the control plane: answers the parsed JSON body (or the bytes, with
 * `responseType: "bytes"`) of a 2xx response, throws a `ShellsError` for anything else. The client's
 * namespaces (`members`, `files`, …) all send through the client's one implementation, so they share
 * its token, timeout and error mapping.
 */
export type ApiCall = <T>(method: HttpMethod, path: string, options: CallOptions) => Promise<T>;

/** Options of a request answered by a server-sent event stream. */
export interface EventCallOptions extends CallOptions {
  /** Sent as `Last-Event-ID`: the server resumes after this event. */
  lastEventId?: string | undefined;
  /**
   * What `timeoutMs` bounds: `response` (default) only the wait for the response to start, so a
   * stream may then last as long as the work it reports; `stream` the whole exchange.
   */
  deadline?: "response" | "stream" | undefined;
}

/**
 * What an event-stream request answered: the events (read lazily; read errors are already
 * `ShellsError`s), or the JSON body of a server that answered without a stream.
 */
export type EventCallResult =
  | { kind: "events"; events: AsyncGenerator<ServerSentEvent, void, undefined> }
  | { kind: "json"; body: unknown };

/** One request asking for `text/event-stream`; non-2xx answers throw as with {@link ApiCall}. */
export type EventCall = (
  method: HttpMethod,
  path: string,
  options: EventCallOptions,
) => Promise<EventCallResult>;

/** A path segment, escaped so an id can never step into another route. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}

/**
 * The caller's idempotency key, or a fresh one: a mutation the server deduplicates by key is then
 * safe to send again after a reset connection or a 503 (the server answers it at most once).
 */
export function idempotencyKeyOf(given: string | undefined): string {
  return given ?? `sdk-${globalThis.crypto.randomUUID()}`;
}
