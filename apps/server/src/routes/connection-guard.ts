import type { Server } from "node:http";
import type { Socket } from "node:net";

/** Limits on the sockets a server keeps open. */
export interface ConnectionLimits {
  /** Most open connections from one remote address. */
  maxConnectionsPerAddress: number;
  /** Most open connections in all. */
  maxConnections: number;
  /** How long a new connection may stay silent before its first request or upgrade, ms. */
  idleSocketTimeoutMs: number;
}

/**
 * Bounds the sockets anonymous peers can hold. Without it, thousands of connections that never
 * send a request (or send a header a byte at a time) hold file descriptors and memory until real
 * requests are refused. A connection over the per-address or global limit is closed as soon as it
 * is accepted; a connection that sends no request within `idleSocketTimeoutMs` is closed. Once a
 * request or WebSocket upgrade arrives the idle timer is off: exec streams, run streams and
 * terminals stay open as long as they are used, and Node's `headersTimeout`/`requestTimeout`/
 * `keepAliveTimeout` bound the rest.
 */
export function guardConnections(server: Server, limits: ConnectionLimits): void {
  const perAddress = new Map<string, number>();
  const awaitingRequest = new WeakMap<Socket, () => void>();
  let open = 0;

  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress ?? "unknown";
    const fromAddress = perAddress.get(address) ?? 0;
    if (fromAddress >= limits.maxConnectionsPerAddress || open >= limits.maxConnections) {
      socket.destroy();
      return;
    }
    perAddress.set(address, fromAddress + 1);
    open += 1;
    socket.once("close", () => {
      open -= 1;
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
    });
    const onIdle = () => socket.destroy();
    awaitingRequest.set(socket, onIdle);
    socket.setTimeout(limits.idleSocketTimeoutMs);
    socket.once("timeout", onIdle);
  });

  const requestArrived = (socket: Socket) => {
    const onIdle = awaitingRequest.get(socket);
    if (!onIdle) return;
    awaitingRequest.delete(socket);
    socket.off("timeout", onIdle);
    socket.setTimeout(0);
  };
  server.on("request", (request: { socket: Socket }) => requestArrived(request.socket));
  server.on("upgrade", (_request: unknown, socket: Socket) => requestArrived(socket));
}
