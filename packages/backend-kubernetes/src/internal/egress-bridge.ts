import { createHash, timingSafeEqual } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { decodePreamble, MAX_PREAMBLE_BYTES } from "./egress-preamble.js";

/** Where a shell's egress goes, and the credential its agent must present. */
export interface EgressRoute {
  token: string;
  /** The shell's egress proxy: a unix socket of this control plane. */
  socketPath: string;
}

/** How long a connection may take to send its preamble. */
const PREAMBLE_TIMEOUT_MS = 5_000;

const digest = (value: string) => createHash("sha256").update(value).digest();

/**
 * The control plane's side of shell egress on Kubernetes: a TCP listener the shells' agent
 * containers dial (the shell NetworkPolicy allows exactly this port on the control plane's Pods).
 * Each connection opens with a preamble naming the shell and its egress credential; the bridge
 * checks the credential in constant time and then relays the connection to that shell's egress
 * proxy socket — where the shell's egress policy, bindings and decision log apply as for every
 * other backend. A connection with a wrong or unknown credential is closed without a byte.
 */
export class EgressBridge {
  readonly #routes = new Map<string, EgressRoute>();
  readonly #resolve: (shellId: string) => Promise<EgressRoute | null>;
  readonly #sockets = new Set<Socket>();
  #server: Server | null = null;

  /**
   * `resolve` finds the route of a shell this process has not seen yet (after a restart, from the
   * shell's Secret).
   */
  constructor(resolve: (shellId: string) => Promise<EgressRoute | null>) {
    this.#resolve = resolve;
  }

  /** Listens; resolves with the port (0 asks for any free one). */
  listen(port: number, host = "0.0.0.0"): Promise<number> {
    const server = createServer({ pauseOnConnect: true }, (socket) => this.#accept(socket));
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        const address = server.address();
        resolve(typeof address === "object" && address ? address.port : port);
      });
    });
  }

  /** Lets a shell's agent through to `route.socketPath`. */
  allow(shellId: string, route: EgressRoute): void {
    this.#routes.set(shellId, route);
  }

  /** Forgets a shell: its next connection is refused (unless `resolve` finds it again). */
  forget(shellId: string): void {
    this.#routes.delete(shellId);
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    const server = this.#server;
    this.#server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.setTimeout(PREAMBLE_TIMEOUT_MS, () => socket.destroy());
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const newline = buffered.indexOf(0x0a);
      if (newline < 0) {
        if (buffered.length > MAX_PREAMBLE_BYTES) socket.destroy();
        return;
      }
      socket.off("data", onData);
      socket.pause();
      const rest = buffered.subarray(newline + 1);
      void this.#relay(socket, buffered.subarray(0, newline).toString("latin1"), rest);
    };
    socket.on("data", onData);
    socket.resume();
  }

  async #relay(socket: Socket, line: string, rest: Buffer): Promise<void> {
    const claim = decodePreamble(line);
    const route = claim
      ? (this.#routes.get(claim.shellId) ?? (await this.#resolve(claim.shellId).catch(() => null)))
      : null;
    if (!claim || !route || !timingSafeEqual(digest(claim.token), digest(route.token))) {
      socket.destroy();
      return;
    }
    this.#routes.set(claim.shellId, route);
    socket.setTimeout(0);
    const upstream = connect(route.socketPath, () => {
      if (rest.length > 0) upstream.write(rest);
      socket.pipe(upstream);
      upstream.pipe(socket);
      socket.resume();
    });
    this.#sockets.add(upstream);
    const end = () => {
      socket.destroy();
      upstream.destroy();
    };
    upstream.on("close", () => this.#sockets.delete(upstream));
    upstream.on("error", end);
    socket.on("close", end);
    upstream.on("close", end);
  }
}
