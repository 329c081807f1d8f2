import type { HttpMethod } from "@shells/contract";
import {
  ConnectionError,
  ServerError,
  ShellsError,
  errorFromResponse,
  excerpt,
} from "../errors.js";
import type {
  ApiCall,
  CallOptions,
  EventCall,
  EventCallOptions,
  EventCallResult,
} from "./api-call.js";
import { readServerSentEvents, type ServerSentEvent } from "./server-sent-events.js";

/** What the transport needs from the client's options, resolved. */
export interface TransportOptions {
  baseUrl: string;
  token: string;
  fetch: typeof globalThis.fetch;
  timeoutMs: number;
  /** Retries of a request that may safely be sent again (see {@link retryPolicy}). */
  maxRetries: number;
  /** First backoff, ms; each retry doubles it (with jitter) up to `MAX_BACKOFF_MS`. */
  retryBaseMs?: number;
}

/** Longest backoff between two tries, and the longest `Retry-After` the client waits out. */
const MAX_BACKOFF_MS = 8_000;
const MAX_RETRY_AFTER_MS = 60_000;
const DEFAULT_RETRY_BASE_MS = 500;

/** Methods that mean the same when sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "PUT",
  "DELETE",
  "OPTIONS",
]);

/** Socket errors that end a connection the server may or may not have acted on. */
const RESET_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "EPIPE",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

/** One try: the exchange, or the error with whether (and after how long) it may be tried again. */
type Attempt =
  | { ok: true; exchange: Exchange }
  | { ok: false; error: ShellsError; retry: boolean; retryAfterMs: number | null };

/** One request in flight: its response (2xx) and how to end or fail it. */
interface Exchange {
  response: Response;
  /** Stops the deadline: the response arrived, and a stream may now last as long as it needs. */
  clearDeadline(): void;
  /** Maps a failure while reading the body to a `ShellsError` (timeout, aborted, dropped). */
  fail(cause: unknown): ShellsError;
  /** Ends the exchange's bookkeeping: the deadline and the link to the caller's signal. */
  close(): void;
}

/**
 * The client's one way to the control plane: authentication, deadlines, the caller's abort signal
 * and error mapping for JSON calls, raw bytes and event streams alike.
 */
export class Transport {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #fetch: typeof globalThis.fetch;
  readonly #timeoutMs: number;
  readonly #maxRetries: number;
  readonly #retryBaseMs: number;

  constructor(options: TransportOptions) {
    this.baseUrl = options.baseUrl;
    this.#token = options.token;
    this.#fetch = options.fetch;
    this.#timeoutMs = options.timeoutMs;
    this.#maxRetries = options.maxRetries;
    this.#retryBaseMs = options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
  }

  /** See {@link ApiCall}. */
  readonly call: ApiCall = async <T>(method: HttpMethod, path: string, options: CallOptions) => {
    const bytes = options.responseType === "bytes";
    const exchange = await this.#open(method, path, options, bytes ? "*/*" : "application/json");
    let text: string;
    try {
      if (bytes) return new Uint8Array(await exchange.response.arrayBuffer()) as T;
      text = await exchange.response.text();
    } catch (cause) {
      throw exchange.fail(cause);
    } finally {
      exchange.close();
    }
    return parseJson<T>(text, exchange.response.status, `${method} ${path}`);
  };

  /** See {@link EventCall}. */
  readonly events: EventCall = async (
    method: HttpMethod,
    path: string,
    options: EventCallOptions,
  ): Promise<EventCallResult> => {
    const headers: Record<string, string> = {};
    if (options.lastEventId !== undefined) headers["last-event-id"] = options.lastEventId;
    const exchange = await this.#open(method, path, options, "text/event-stream", headers);
    if (options.deadline !== "stream") exchange.clearDeadline();
    const { response } = exchange;
    const contentType = response.headers.get("content-type") ?? "";
    if (!contentType.includes("text/event-stream") || response.body === null) {
      // A server (or proxy) that does not stream answers the route's JSON instead.
      let text: string;
      try {
        text = await response.text();
      } catch (cause) {
        throw exchange.fail(cause);
      } finally {
        exchange.close();
      }
      return { kind: "json", body: parseJson(text, response.status, `${method} ${path}`) };
    }
    return { kind: "events", events: guardEvents(readServerSentEvents(response.body), exchange) };
  };

  /**
   * Sends a request, retrying it while that is safe and useful: a request that means the same when
   * sent twice (GET, PUT, DELETE, or any request carrying an `Idempotency-Key`, which the server
   * answers at most once) is tried again after a 429 or a 503 (waiting what `Retry-After` asks,
   * up to a minute), after its connection was reset before an answer came, and — with a key —
   * while the server says the first try is still in progress. Other requests are sent once.
   */
  async #open(
    method: HttpMethod,
    path: string,
    options: CallOptions,
    accept: string,
    extraHeaders: Record<string, string> = {},
  ): Promise<Exchange> {
    const retryable = IDEMPOTENT_METHODS.has(method) || options.idempotencyKey !== undefined;
    for (let attempt = 0; ; attempt += 1) {
      const result = await this.#attempt(method, path, options, accept, extraHeaders);
      if (result.ok) return result.exchange;
      const backoff = Math.min(this.#retryBaseMs * 2 ** attempt, MAX_BACKOFF_MS);
      const waitMs = result.retryAfterMs ?? backoff * (0.5 + Math.random() / 2);
      if (!retryable || !result.retry || attempt >= this.#maxRetries || waitMs > MAX_RETRY_AFTER_MS)
        throw result.error;
      await sleep(waitMs, options.signal, `${method} ${path}`);
    }
  }

  async #attempt(
    method: HttpMethod,
    path: string,
    options: CallOptions,
    accept: string,
    extraHeaders: Record<string, string>,
  ): Promise<Attempt> {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = {
      ...extraHeaders,
      accept,
      authorization: `Bearer ${this.#token}`,
    };
    let body: Uint8Array | string | undefined;
    if (options.rawBody !== undefined) {
      headers["content-type"] = options.rawBody.contentType;
      body = options.rawBody.bytes;
    } else if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;

    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    // A forgotten stream must not keep a Node process alive until its deadline.
    (timer as { unref?: () => void }).unref?.();
    const callerSignal = options.signal;
    const onCallerAbort = () => controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) onCallerAbort();
    else callerSignal?.addEventListener("abort", onCallerAbort, { once: true });

    const describe = `${method} ${url.pathname}`;
    let responded = false;
    const close = () => {
      clearTimeout(timer);
      callerSignal?.removeEventListener("abort", onCallerAbort);
    };
    const fail = (cause: unknown) => {
      close();
      return connectionError(cause, {
        describe,
        baseUrl: this.baseUrl,
        timeoutMs,
        timedOut,
        abortedByCaller: callerSignal?.aborted === true,
        responded,
      });
    };

    let response: Response;
    try {
      response = await this.#fetch(url, { method, headers, body, signal: controller.signal });
    } catch (cause) {
      const error = fail(cause);
      return { ok: false, error, retry: isReset(cause), retryAfterMs: null };
    }
    responded = true;
    if (response.status < 200 || response.status >= 300) {
      let text: string;
      try {
        text = await response.text();
      } catch (cause) {
        throw fail(cause);
      }
      close();
      const error = errorFromResponse(response.status, text);
      const retry =
        response.status === 429 ||
        response.status === 503 ||
        (error.code === "request_in_progress" && options.idempotencyKey !== undefined);
      return { ok: false, error, retry, retryAfterMs: retryAfterMs(response, error) };
    }
    return {
      ok: true,
      exchange: { response, clearDeadline: () => clearTimeout(timer), fail, close },
    };
  }
}

/** Whether a failed fetch lost its connection to a reset (not a refusal, a timeout or an abort). */
function isReset(cause: unknown): boolean {
  for (let error = cause, depth = 0; error instanceof Error && depth < 4; depth += 1) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && RESET_CODES.has(code)) return true;
    error = error.cause;
  }
  return false;
}

/** How long the server asked to wait: `Retry-After` (seconds or a date), else `retryAfterMs`. */
function retryAfterMs(response: Response, error: ShellsError): number | null {
  const header = response.headers.get("retry-after");
  if (header !== null) {
    const seconds = Number(header);
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
    const date = Date.parse(header);
    if (Number.isFinite(date)) return Math.max(0, date - Date.now());
  }
  const detail = error.details?.["retryAfterMs"];
  return typeof detail === "number" && detail >= 0 ? detail : null;
}

/** Waits `ms`, or fails as aborted when the caller's signal fires first. */
function sleep(ms: number, signal: AbortSignal | undefined, describe: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const aborted = () =>
      new ConnectionError({
        code: "aborted",
        status: 0,
        message: `${describe}: aborted by the caller`,
      });
    if (signal?.aborted) return reject(aborted());
    const onAbort = () => {
      clearTimeout(timer);
      reject(aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The events of a stream, with read failures mapped to `ShellsError`s and the exchange closed. */
async function* guardEvents(
  events: AsyncGenerator<ServerSentEvent, void, undefined>,
  exchange: Exchange,
): AsyncGenerator<ServerSentEvent, void, undefined> {
  try {
    yield* events;
  } catch (cause) {
    throw exchange.fail(cause);
  } finally {
    exchange.close();
  }
}

function parseJson<T>(text: string, status: number, describe: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (cause) {
    throw new ServerError(
      {
        code: "unexpected_response",
        status,
        message: `${describe} answered HTTP ${status} with a body that is not JSON: ${excerpt(text)}`,
      },
      { cause },
    );
  }
}

function connectionError(
  cause: unknown,
  context: {
    describe: string;
    baseUrl: string;
    timeoutMs: number;
    timedOut: boolean;
    abortedByCaller: boolean;
    /** The response had started: the connection was lost while reading it. */
    responded: boolean;
  },
): ShellsError {
  if (cause instanceof ShellsError) return cause;
  if (context.timedOut) {
    return new ConnectionError(
      {
        code: "timeout",
        status: 0,
        message: `${context.describe}: no response from ${context.baseUrl} within ${context.timeoutMs} ms`,
      },
      { cause },
    );
  }
  if (context.abortedByCaller) {
    return new ConnectionError(
      { code: "aborted", status: 0, message: `${context.describe}: aborted by the caller` },
      { cause },
    );
  }
  return new ConnectionError(
    {
      code: "connection_failed",
      status: 0,
      message: context.responded
        ? `${context.describe}: lost the connection to ${context.baseUrl}: ${describeCause(cause)}`
        : `${context.describe}: could not reach ${context.baseUrl}: ${describeCause(cause)}`,
    },
    { cause },
  );
}

/** The most specific reason a fetch failed (Node puts the socket error in `cause`). */
function describeCause(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause);
  const inner: unknown = cause.cause;
  if (inner instanceof Error) {
    const code = (inner as { code?: unknown }).code;
    return typeof code === "string" ? `${code} (${inner.message})` : inner.message;
  }
  return cause.message;
}
