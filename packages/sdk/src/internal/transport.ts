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
}

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

  constructor(options: TransportOptions) {
    this.baseUrl = options.baseUrl;
    this.#token = options.token;
    this.#fetch = options.fetch;
    this.#timeoutMs = options.timeoutMs;
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

  async #open(
    method: HttpMethod,
    path: string,
    options: CallOptions,
    accept: string,
    extraHeaders: Record<string, string> = {},
  ): Promise<Exchange> {
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
      throw fail(cause);
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
      throw errorFromResponse(response.status, text);
    }
    return { response, clearDeadline: () => clearTimeout(timer), fail, close };
  }
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
