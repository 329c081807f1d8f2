import type { HttpMethod } from "@shells/contract";

/** A query string value; `undefined` leaves the parameter out. */
export type QueryValue = string | number | undefined;

/** What one request carries besides its method and path. */
export interface CallOptions {
  query?: Record<string, QueryValue> | undefined;
  body?: unknown;
  idempotencyKey?: string | undefined;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/**
 * One authenticated request to the control plane: answers the parsed JSON body of a 2xx response,
 * throws a `ShellsError` for anything else. The client's namespaces (`members`, `keys`, …) all send
 * through the client's one implementation, so they share its token, timeout and error mapping.
 */
export type ApiCall = <T>(method: HttpMethod, path: string, options: CallOptions) => Promise<T>;

/** A path segment, escaped so an id can never step into another route. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
