import { connect, type Socket } from "node:net";
import { SANDBOX_EGRESS_PORT, SandboxError, type SandboxSpec } from "@shells/sandbox";
import {
  AgentEgress,
  AgentListener,
  decodeNetOpen,
  FrameType,
  MAX_PAYLOAD,
  MAX_STREAMS,
  NET_WINDOW,
  type Frame,
  type NetOpen,
} from "./protocol.js";

/** Where a shell's streams go and which listeners it has. */
export interface EgressRelayOptions {
  /** The shell's egress proxy (it may come and go: every stream connects afresh). */
  socketPath: string;
  /**
   * `INTERNET`: the HTTP proxy, the resolver and transparent ports 80/443; `BINDINGS`: the HTTP
   * proxy only.
   */
  egress: AgentEgress;
}

/** Writes one frame to the agent (nothing once the connection is gone). */
export type SendFrame = (type: FrameType, id: number, payload?: Uint8Array) => void;

interface RelayedStream {
  socket: Socket;
  /** Bytes sent to the guest that it has not credited yet (at most `NET_WINDOW`). */
  unackedDown: number;
  /** What the proxy said that the guest's window has no room for yet (the socket is paused). */
  held: Buffer | null;
  /** Bytes the guest sent that the proxy's socket has not taken yet. */
  pendingUp: number;
}

/** The fixed address of each guest listener, as the PROXY line names it. */
const LISTENERS: Record<number, { address: string; port: number; needs: AgentEgress }> = {
  [AgentListener.PROXY]: {
    address: "127.0.0.1",
    port: SANDBOX_EGRESS_PORT,
    needs: AgentEgress.BINDINGS,
  },
  [AgentListener.DNS]: { address: "127.0.0.53", port: 53, needs: AgentEgress.INTERNET },
};

/** The guest's clients connect from its loopback. */
const LOOPBACK_V4 = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/** The ports a transparent stream may name: those the container class redirects to the proxy. */
const TRANSPARENT_PORTS = new Set([80, 443]);

/**
 * Where a stream's PROXY line says it was going, or null to refuse it: the listener's fixed
 * address, or for a transparent stream the address the guest's client dialled — which the guest
 * says, so it is checked here: port 80 or 443 only (the proxy decides those on Host and SNI), and
 * never `0.0.0.0/8`, loopback (the guest's own listeners live there, and its proxy names them) or
 * multicast and above (nothing a client reaches).
 */
function destinationOf(
  open: NetOpen,
  egress: AgentEgress,
): { address: string; port: number } | null {
  if (open.listener === AgentListener.TRANSPARENT) {
    const destination = open.destination;
    if (egress < AgentEgress.INTERNET || !destination) return null;
    const first = Number(destination.address.split(".")[0]);
    if (!TRANSPARENT_PORTS.has(destination.port) || first === 0 || first === 127 || first >= 224)
      return null;
    return destination;
  }
  const listener = LISTENERS[open.listener];
  return listener && egress >= listener.needs ? listener : null;
}

/**
 * The host's half of a microvm shell's way out: the guest agent accepts connections on its egress
 * listeners (127.0.0.1:3128, and for `internet` the resolver at 127.0.0.53:53 and any address's
 * ports 80 and 443) and relays each as a stream of NET_* frames over its port; this relay connects
 * each stream to the shell's egress proxy (a unix socket the control plane keeps) and writes the
 * PROXY protocol line first.
 *
 * This is the boundary, not the agent: a subverted guest can send any frame. So the PROXY line is
 * the host's: its destination is the listener's fixed address, or for a transparent stream an
 * address checked here (`destinationOf`) that can only select the proxy's transparent handling
 * (ports 80 and 443, decided on Host and SNI, as for containers), and a listener the shell's mode
 * does not have (the resolver or port 80 for a shell that only has bindings) is refused. What a
 * connection may reach past that is the proxy's decision. Memory is bounded: at most
 * `MAX_STREAMS` streams, and per stream at most `NET_WINDOW` bytes in each direction that the
 * receiver has not credited (a guest that sends past its window is cut off; the proxy's socket is
 * paused while the guest has a window's worth unread).
 */
export class EgressRelay {
  readonly #send: SendFrame;
  readonly #options: EgressRelayOptions;
  readonly #streams = new Map<number, RelayedStream>();

  constructor(send: SendFrame, options: EgressRelayOptions) {
    this.#send = send;
    this.#options = options;
  }

  /** Streams open now. */
  get size(): number {
    return this.#streams.size;
  }

  /** Handles one NET_* frame from the guest. */
  onFrame(frame: Frame): void {
    const stream = this.#streams.get(frame.id);
    switch (frame.type) {
      case FrameType.NET_OPEN:
        this.#open(frame.id, frame.payload);
        break;
      case FrameType.NET_DATA:
        if (!stream) break;
        if (frame.payload.length === 0) {
          stream.socket.end();
          break;
        }
        stream.pendingUp += frame.payload.length;
        if (stream.pendingUp > NET_WINDOW) {
          // Past its window: the guest ignores the protocol, and its bytes would pile up here.
          this.#close(frame.id);
          break;
        }
        this.#writeUp(frame.id, stream, Buffer.from(frame.payload));
        break;
      case FrameType.NET_CREDIT:
        if (!stream || frame.payload.length < 4) break;
        stream.unackedDown = Math.max(0, stream.unackedDown - frame.payload.readUInt32LE(0));
        this.#sendDown(frame.id, stream);
        break;
      case FrameType.NET_CLOSE:
        if (!stream) break;
        // The guest's client is gone: so is the stream (the agent frees the id on our answer).
        this.#close(frame.id);
        break;
    }
  }

  /** Ends every stream without a word to the guest (its connection is gone). */
  closeAll(): void {
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const stream of streams) stream.socket.destroy();
  }

  #open(id: number, payload: Buffer): void {
    if (this.#streams.has(id)) {
      // An id still open opened again: the guest is out of step; end both.
      this.#close(id);
      return;
    }
    const open = decodeNetOpen(payload);
    const destination = open ? destinationOf(open, this.#options.egress) : null;
    if (
      !open ||
      !destination ||
      id < 1 ||
      id > MAX_STREAMS ||
      !LOOPBACK_V4.test(open.clientAddress)
    ) {
      this.#send(FrameType.NET_CLOSE, id);
      return;
    }
    // allowHalfOpen: a proxy that has said all it will say may still be sent the rest.
    const socket = connect({ path: this.#options.socketPath, allowHalfOpen: true });
    const stream: RelayedStream = { socket, unackedDown: 0, held: null, pendingUp: 0 };
    this.#streams.set(id, stream);
    // The line goes first and is ours: the guest's bytes only ever follow it.
    socket.write(
      `PROXY TCP4 ${open.clientAddress} ${destination.address} ${open.clientPort} ${destination.port}\r\n`,
    );
    socket.on("data", (chunk: Buffer) => {
      if (this.#streams.get(id) !== stream) return;
      stream.held = stream.held ? Buffer.concat([stream.held, chunk]) : chunk;
      this.#sendDown(id, stream);
    });
    socket.on("end", () => {
      if (this.#streams.get(id) === stream) this.#send(FrameType.NET_DATA, id);
    });
    // No proxy listening (a control-plane restart) fails this stream alone, at once.
    socket.on("error", () => undefined);
    socket.on("close", () => {
      if (this.#streams.get(id) !== stream) return;
      this.#streams.delete(id);
      this.#send(FrameType.NET_CLOSE, id);
    });
  }

  /**
   * Sends what the proxy said, as far as the guest's window allows: never past it (the agent cuts
   * off a host that does). The rest of a chunk waits here, with the socket paused, until credit
   * comes: at most one chunk per stream.
   */
  #sendDown(id: number, stream: RelayedStream): void {
    let held = stream.held;
    while (held && held.length > 0 && stream.unackedDown < NET_WINDOW) {
      const part = held.subarray(0, Math.min(NET_WINDOW - stream.unackedDown, MAX_PAYLOAD));
      held = held.subarray(part.length);
      stream.unackedDown += part.length;
      this.#send(FrameType.NET_DATA, id, part);
    }
    stream.held = held && held.length > 0 ? held : null;
    if (stream.held || stream.unackedDown >= NET_WINDOW) stream.socket.pause();
    else if (stream.socket.isPaused()) stream.socket.resume();
  }

  #writeUp(id: number, stream: RelayedStream, bytes: Buffer): void {
    stream.socket.write(bytes, (error) => {
      if (error || this.#streams.get(id) !== stream) return;
      stream.pendingUp -= bytes.length;
      const credit = Buffer.alloc(4);
      credit.writeUInt32LE(bytes.length, 0);
      this.#send(FrameType.NET_CREDIT, id, credit);
    });
  }

  #close(id: number): void {
    const stream = this.#streams.get(id);
    this.#streams.delete(id);
    stream?.socket.destroy();
    this.#send(FrameType.NET_CLOSE, id);
  }
}

/** Longest unix socket path the kernel takes (sun_path, with its terminating zero). */
const UNIX_PATH_MAX = 108;

/** Which egress listeners a shell's guest opens: its mode, and whether it was given a proxy. */
export function agentEgressOf(spec: SandboxSpec): AgentEgress {
  if (!spec.egress) return AgentEgress.NONE;
  return spec.network === "internet" ? AgentEgress.INTERNET : AgentEgress.BINDINGS;
}

/** Where a shell's egress streams go; null for a shell without an egress proxy. */
export function relayOptionsOf(spec: SandboxSpec): EgressRelayOptions | null {
  return spec.egress ? { socketPath: spec.egress.socketPath, egress: agentEgressOf(spec) } : null;
}

/**
 * Refuses a spec whose egress cannot be honoured: `internet` without a proxy (the shell would have
 * no way out, or worse, one not governed), or a socket path the kernel cannot connect to.
 */
export function checkEgressSpec(spec: SandboxSpec): void {
  if (spec.network === "internet" && !spec.egress?.socketPath)
    throw new SandboxError(
      "unsupported",
      "network mode `internet` needs an egress proxy socket, and none was given",
      { network: spec.network },
    );
  const socketPath = spec.egress?.socketPath;
  if (
    socketPath !== undefined &&
    (!socketPath.startsWith("/") || Buffer.byteLength(socketPath) >= UNIX_PATH_MAX)
  )
    throw new SandboxError(
      "unsupported",
      `the egress proxy socket must be an absolute path under ${UNIX_PATH_MAX} bytes`,
      { socketPath },
    );
}
