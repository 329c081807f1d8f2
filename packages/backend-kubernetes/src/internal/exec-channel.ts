import { PassThrough } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
// The client's WebSocket handler (authentication, TLS, subprotocol negotiation). Imported from its
// module because the package index exports only `Exec`, whose handler is bound to process stdio
// (a v5 close frame would end this process's stdout).
import { WebSocketHandler } from "@kubernetes/client-node/dist/web-socket-handler.js";

/**
 * The exec subresource's channel protocol (`v4.channel.k8s.io`, `v5.channel.k8s.io`) over the
 * client's WebSocket: every binary message is one channel byte and its payload.
 *
 * - 0 stdin (client → server), 1 stdout, 2 stderr (server → client);
 * - 3 error: one JSON `Status` when the command ends — `status: "Success"`, or `Failure` with
 *   `reason: "NonZeroExitCode"` and the code in `details.causes[{reason: "ExitCode", message}]`,
 *   or `Failure` with another reason when the command could not run at all;
 * - 4 resize (client → server): JSON `{"Width": cols, "Height": rows}`;
 * - 255 close (v5 only): `[255, channel]` says the sender will write no more to that channel,
 *   which is how stdin reaches EOF without closing the connection.
 */
export const Channel = { stdin: 0, stdout: 1, stderr: 2, error: 3, resize: 4, close: 255 } as const;

/** How a command on the exec subresource ended. */
export type ExecEnd =
  /** It ran and exited (0 for `Success`). */
  | { kind: "exit"; exitCode: number }
  /** The server reports it could not run or failed (no exit code). */
  | { kind: "error"; message: string; reason: string | null }
  /** The connection ended without a status: the container or its Pod went away. */
  | { kind: "closed" };

/** The JSON `Status` the error channel carries. */
interface ExecStatus {
  status?: string;
  reason?: string;
  message?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

/** Reads the error channel's `Status` as an exit code, or the failure it reports. */
export function execEndOf(payload: Uint8Array): ExecEnd {
  let status: ExecStatus;
  try {
    status = JSON.parse(Buffer.from(payload).toString("utf8")) as ExecStatus;
  } catch {
    return { kind: "error", message: "the error channel carried no Status", reason: null };
  }
  if (status.status === "Success") return { kind: "exit", exitCode: 0 };
  if (status.reason === "NonZeroExitCode") {
    const cause = status.details?.causes?.find((c) => c.reason === "ExitCode");
    const exitCode = Number(cause?.message);
    if (Number.isInteger(exitCode)) return { kind: "exit", exitCode };
  }
  return {
    kind: "error",
    message: status.message ?? "the command failed",
    reason: status.reason ?? null,
  };
}

/** The exec subresource's path for a command in a container. */
export function execPath(
  namespace: string,
  pod: string,
  container: string,
  command: readonly string[],
  io: { stdin: boolean; tty: boolean },
): string {
  const query = new URLSearchParams();
  for (const arg of command) query.append("command", arg);
  query.set("container", container);
  query.set("stdin", String(io.stdin));
  query.set("stdout", "true");
  // A terminal has one output stream: the server refuses stderr with tty.
  query.set("stderr", String(!io.tty));
  query.set("tty", String(io.tty));
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/exec?${query.toString()}`;
}

/** Largest stdin payload of one message. */
const MAX_STDIN_FRAME = 32 * 1024;

/** The socket as the client hands it over (`ws`'s WebSocket in Node). */
interface ChannelSocket {
  readonly protocol: string;
  readonly readyState: number;
  send(data: Buffer, callback?: (error?: Error) => void): void;
  close(): void;
  pause?(): void;
  resume?(): void;
  addEventListener(type: "close", listener: () => void): void;
}

/** What an exec session does with output: awaited before more is read (backpressure). */
export type OutputSink = (stream: "stdout" | "stderr", chunk: Uint8Array) => void | Promise<void>;

/**
 * One command on the exec subresource. Output goes to `onOutput` in order; while a returned promise
 * is pending the socket is paused, so a slow consumer holds the command back (its pipe fills)
 * instead of growing memory here.
 */
export class ExecSession {
  readonly #socket: ChannelSocket;
  readonly #end: Promise<ExecEnd>;

  private constructor(socket: ChannelSocket, end: Promise<ExecEnd>) {
    this.#socket = socket;
    this.#end = end;
  }

  /** Opens the command's connection (the handshake picks v5 where the server has it). */
  static async open(
    kubeConfig: KubeConfig,
    path: string,
    onOutput: OutputSink,
  ): Promise<ExecSession> {
    let outputChain: Promise<void> = Promise.resolve();
    let ended: ExecEnd | null = null;
    let settle!: (end: ExecEnd) => void;
    const end = new Promise<ExecEnd>((resolve) => (settle = resolve));
    let socket: ChannelSocket | null = null;
    const finish = (how: ExecEnd) => {
      if (ended) return;
      ended = how;
      // Output handed to onOutput is delivered before the end.
      void outputChain.then(() => settle(how));
    };
    // The client's handler would end these on a v5 close frame; they are not the process's own.
    const sink = { stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough() };
    const handler = new WebSocketHandler(kubeConfig, undefined, sink);
    const opened = (await handler.connect(path, null, (channel: number, payload: Buffer) => {
      if (channel === Channel.stdout || channel === Channel.stderr) {
        const stream = channel === Channel.stdout ? "stdout" : "stderr";
        const chunk = new Uint8Array(payload);
        outputChain = outputChain.then(async () => {
          const pending = onOutput(stream, chunk);
          if (pending) {
            socket?.pause?.();
            try {
              await pending;
            } finally {
              socket?.resume?.();
            }
          }
        });
      } else if (channel === Channel.error) {
        finish(execEndOf(payload));
      }
      // Close frames (255) and anything unknown need nothing: the status comes on channel 3.
      return true;
    })) as unknown as ChannelSocket;
    socket = opened;
    opened.addEventListener("close", () => finish({ kind: "closed" }));
    return new ExecSession(opened, end);
  }

  /** The subprotocol the server chose (`v5.channel.k8s.io`, `v4.channel.k8s.io`, …). */
  get protocol(): string {
    return this.#socket.protocol;
  }

  /** Settles when the command ends (after its output was delivered); never rejects. */
  get end(): Promise<ExecEnd> {
    return this.#end;
  }

  /** Sends bytes to the command's stdin; resolves once the socket took them. */
  async write(data: Uint8Array): Promise<void> {
    for (let offset = 0; offset < data.length; offset += MAX_STDIN_FRAME) {
      const part = data.subarray(offset, offset + MAX_STDIN_FRAME);
      await this.#send(Buffer.concat([Buffer.from([Channel.stdin]), part]));
    }
  }

  /**
   * Closes stdin (EOF for the command) where the protocol can say so (v5); false on an older
   * server, where only closing the whole connection would.
   */
  closeStdin(): boolean {
    if (this.protocol !== "v5.channel.k8s.io") return false;
    void this.#send(Buffer.from([Channel.close, Channel.stdin])).catch(() => undefined);
    return true;
  }

  /** Sets the terminal's size (a tty session). */
  resize(cols: number, rows: number): void {
    const payload = Buffer.from(JSON.stringify({ Width: cols, Height: rows }), "utf8");
    void this.#send(Buffer.concat([Buffer.from([Channel.resize]), payload])).catch(() => undefined);
  }

  /** Drops the connection (the server then ends its side). */
  close(): void {
    this.#socket.close();
  }

  #send(message: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#socket.readyState !== 1) {
        reject(new Error("the exec connection is closed"));
        return;
      }
      this.#socket.send(message, (error) => (error ? reject(error) : resolve()));
    });
  }
}
