import type { FastifyReply, FastifyRequest } from "fastify";
import { once } from "node:events";

/** A server-sent event stream on one response. */
export interface EventStream {
  /** Sends one event; resolves once the socket took it (waits for `drain` when the client is slow). */
  send(event: string, data: unknown, id?: number | string): Promise<void>;
  end(): void;
  /** True once the client went away. */
  readonly closed: boolean;
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal;
}

/**
 * Takes the response over from Fastify and opens a `text/event-stream`. Writes honour the socket's
 * backpressure: `send` waits for `drain`, so a slow reader holds the producer back instead of
 * making the server buffer without bound.
 */
export function openEventStream(request: FastifyRequest, reply: FastifyReply): EventStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
    "x-request-id": request.id,
  });
  res.flushHeaders();
  const gone = new AbortController();
  const onClose = () => gone.abort("client went away");
  res.on("close", onClose);
  return {
    get closed() {
      return gone.signal.aborted;
    },
    signal: gone.signal,
    async send(event, data, id) {
      if (gone.signal.aborted) return;
      const frame = `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      if (!res.write(frame)) {
        await Promise.race([once(res, "drain"), once(gone.signal, "abort")]);
      }
    },
    end() {
      res.off("close", onClose);
      if (!res.writableEnded) res.end();
    },
  };
}

/** True when the client asked for a server-sent event stream. */
export function wantsEventStream(request: FastifyRequest): boolean {
  return (request.headers.accept ?? "").includes("text/event-stream");
}
