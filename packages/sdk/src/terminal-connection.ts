import {
  TERM_PROTOCOL,
  TERM_TOKEN_PROTOCOL_PREFIX,
  type KillReason,
  type TermCredential,
} from "@shells/contract";
import { ConnectionError } from "./errors.js";

/** Signals a terminal can deliver to the shell's foreground process group. */
export type TerminalSignal = "SIGINT" | "SIGTERM" | "SIGHUP" | "SIGQUIT";

/** Options of {@link TerminalCredential.attach}. */
export interface TerminalAttachOptions {
  /** Initial width in columns (default 80). */
  cols?: number | undefined;
  /** Initial height in rows (default 24). */
  rows?: number | undefined;
  /** Aborting it before the connection opens fails the attach; after, it hangs up. */
  signal?: AbortSignal | undefined;
}

/** How a terminal connection ended. */
export interface TerminalClose {
  /**
   * The WebSocket close code: 1000 the shell ended, 4001 the credential expired, 4003 the
   * credential was revoked (the API key that minted it was revoked or its holder offboarded), 4401
   * the credential was refused (unknown, used, expired or revoked before attaching), 1001 the
   * server shut down, 1011 the server failed.
   */
  code: number;
  reason: string;
  /** The remote shell's exit code, when it ended. */
  exitCode: number | null;
  /** Why the sandbox killed the shell, when it did. */
  killReason: KillReason | null;
  /** What the server reported before refusing or failing the connection. */
  error: { code: string; message: string } | null;
}

/**
 * A term credential as minted (`shells.term(id)`): the token is single-use and short-lived, so
 * attach soon, once.
 */
export interface TerminalCredential extends TermCredential {
  /** Opens the WebSocket and answers once it is open. */
  attach(options?: TerminalAttachOptions): Promise<TerminalConnection>;
}

/** The part of the WHATWG `WebSocket` this module uses; `ws` implements it too. */
interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

const OPEN = 1;

/**
 * The platform's WebSocket: the global one (browsers, Node 22+), else the `ws` package (Node 20),
 * loaded only when a terminal is attached so the SDK stays importable in browsers.
 */
async function webSocketConstructor(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global !== undefined) return global;
  try {
    const ws = await import("ws");
    return ws.default as unknown as WebSocketConstructor;
  } catch (cause) {
    throw new ConnectionError(
      {
        code: "connection_failed",
        status: 0,
        message:
          "this runtime has no WebSocket: use Node 22+ or a browser, or install the `ws` package",
      },
      { cause },
    );
  }
}

/**
 * Attaches to a credential's WebSocket URL. The token goes as the subprotocol
 * `shells.token.<token>` next to `shells.term.v1`, never in the URL (where logs would keep it);
 * the server selects only `shells.term.v1`.
 */
export async function attachTerminal(
  credential: TermCredential,
  options: TerminalAttachOptions = {},
): Promise<TerminalConnection> {
  const url = new URL(credential.url);
  if (options.cols !== undefined) url.searchParams.set("cols", String(options.cols));
  if (options.rows !== undefined) url.searchParams.set("rows", String(options.rows));
  const WebSocketImpl = await webSocketConstructor();
  const protocols = [TERM_PROTOCOL, `${TERM_TOKEN_PROTOCOL_PREFIX}${credential.token}`];
  const connection = new TerminalConnection(
    new WebSocketImpl(url.toString(), protocols),
    options.signal,
  );
  await connection.opened;
  return connection;
}

/**
 * A live terminal on a shell's PTY. Iterate it (`for await (const bytes of term)`) for the
 * terminal's output; output that arrives before or between reads is kept until read, so iterate
 * it while the terminal runs. `closed` settles with how it ended.
 *
 * ```ts
 * const term = await (await shells.term(shell.id)).attach({ cols: 120, rows: 40 });
 * term.write("tty\r");
 * for await (const bytes of term) process.stdout.write(bytes);
 * const { exitCode } = await term.closed;
 * ```
 */
export class TerminalConnection implements AsyncIterable<Uint8Array> {
  /** Settles when the connection ends (never rejects). */
  readonly closed: Promise<TerminalClose>;
  /** @internal Settles when the socket opens; rejects if it closes or fails first. */
  readonly opened: Promise<void>;
  readonly #socket: WebSocketLike;
  readonly #output: Uint8Array[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  #exitCode: number | null = null;
  #killReason: KillReason | null = null;
  #error: { code: string; message: string } | null = null;

  /** @internal Use `credential.attach()`. */
  constructor(socket: WebSocketLike, signal?: AbortSignal) {
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    let open: () => void = () => undefined;
    let fail: (error: Error) => void = () => undefined;
    this.opened = new Promise<void>((resolve, reject) => {
      open = resolve;
      fail = reject;
    });
    let finish: (close: TerminalClose) => void = () => undefined;
    this.closed = new Promise<TerminalClose>((resolve) => (finish = resolve));
    const onAbort = () => this.close();
    signal?.addEventListener("abort", onAbort, { once: true });

    socket.onopen = () => open();
    socket.onerror = () =>
      fail(
        new ConnectionError({
          code: "connection_failed",
          status: 0,
          message: "the terminal WebSocket failed to connect",
        }),
      );
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => {
      signal?.removeEventListener("abort", onAbort);
      fail(
        new ConnectionError({
          code: "connection_failed",
          status: 0,
          message: `the terminal WebSocket closed before it opened (${event.code})`,
        }),
      );
      this.#ended = true;
      this.#wake?.();
      finish({
        code: event.code,
        reason: event.reason,
        exitCode: this.#exitCode,
        killReason: this.#killReason,
        error: this.#error,
      });
    };
    if (signal?.aborted) this.close();
  }

  /** Types into the terminal: text is sent as UTF-8 (`"\u0003"` is Ctrl-C, `"\r"` is Enter). */
  write(data: string | Uint8Array): void {
    if (this.#socket.readyState !== OPEN) return;
    this.#socket.send(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Tells the PTY its new size (the shell's programs see SIGWINCH). */
  resize(cols: number, rows: number): void {
    this.#control({ type: "resize", cols, rows });
  }

  /** Sends a signal to the terminal's foreground process group. */
  signal(name: TerminalSignal): void {
    this.#control({ type: "signal", signal: name });
  }

  /** Hangs up: the remote shell gets SIGHUP. */
  close(): void {
    if (this.#socket.readyState <= OPEN) this.#socket.close(1000, "client hung up");
  }

  /** The terminal's output, chunk by chunk, until the connection ends. One reader at a time. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      const chunk = this.#output.shift();
      if (chunk !== undefined) {
        yield chunk;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }

  #control(message: Record<string, unknown>): void {
    if (this.#socket.readyState !== OPEN) return;
    this.#socket.send(JSON.stringify(message));
  }

  #receive(data: unknown): void {
    if (typeof data === "string") {
      this.#controlMessage(data);
      return;
    }
    const bytes =
      data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : ArrayBuffer.isView(data)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : undefined;
    if (bytes === undefined) return;
    this.#output.push(bytes);
    this.#wake?.();
  }

  /** Text frames from the server are control messages: `exit`, `expired`, `revoked`, `error`. */
  #controlMessage(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof message !== "object" || message === null) return;
    const { type, exitCode, killReason, code } = message as Record<string, unknown>;
    const messageText = (message as { message?: unknown }).message;
    if (type === "exit" && typeof exitCode === "number") {
      this.#exitCode = exitCode;
      if (typeof killReason === "string") this.#killReason = killReason as KillReason;
    } else if (type === "error" || type === "expired" || type === "revoked") {
      this.#error = {
        code: typeof code === "string" ? code : type,
        message: typeof messageText === "string" ? messageText : String(type),
      };
    }
  }
}
