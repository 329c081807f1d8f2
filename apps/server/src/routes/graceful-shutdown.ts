import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { errorBody } from "./error-handler.js";

/** What `Retry-After` asks of a client during a shutdown, seconds: about a restart's length. */
export const SHUTDOWN_RETRY_AFTER_SECONDS = 2;

/** How long connections may stay open after the work under way was ended, ms. */
const CUT_CONNECTIONS_AFTER_MS = 2_000;

/** Options of {@link registerGracefulShutdown}. */
export interface GracefulShutdownOptions {
  /** How long requests under way may take to finish once the shutdown began, ms. */
  graceMs: number;
  /** Ends the work still running when the grace is over (execs, runs, terminals). */
  endWork: () => Promise<void>;
  logger: FastifyBaseLogger;
}

/**
 * A bounded graceful shutdown (`app.close()`). From its first moment every request that still
 * reaches the app (on a connection opened before) is answered 503 `shutting_down` in the API's
 * error shape, with `Retry-After` and `Connection: close`, so clients retry against the next
 * process; requests under way may finish for `graceMs`. Then `endWork` ends what still runs (an
 * exec ends with kill reason `host_restart`), and shortly after, every connection still open is
 * closed, so no stream or stuck request can hold the process. Register it before the routes.
 * The app must be built with `return503OnClosing: false` (Fastify's own 503 has another shape).
 */
export function registerGracefulShutdown(
  app: FastifyInstance,
  options: GracefulShutdownOptions,
): void {
  let closing = false;
  const timers: NodeJS.Timeout[] = [];
  app.addHook("onRequest", async (request, reply) => {
    if (!closing) return;
    return reply
      .code(503)
      .header("retry-after", String(SHUTDOWN_RETRY_AFTER_SECONDS))
      .header("connection", "close")
      .send(
        errorBody(
          "shutting_down",
          `The server is shutting down; retry in ${SHUTDOWN_RETRY_AFTER_SECONDS} seconds.`,
          request.id,
        ),
      );
  });
  // Answers finished during the shutdown end their connection, so it closes as soon as they are.
  app.addHook("onSend", async (_request, reply) => {
    if (closing) reply.header("connection", "close");
  });
  app.addHook("preClose", async () => {
    closing = true;
    const grace = setTimeout(() => {
      options.logger.warn(
        { graceMs: options.graceMs },
        "shutdown grace is over: ending the work still running",
      );
      options
        .endWork()
        .catch((error: unknown) =>
          options.logger.error({ err: error }, "ending work at shutdown failed"),
        )
        .finally(() => {
          const cut = setTimeout(() => app.server.closeAllConnections(), CUT_CONNECTIONS_AFTER_MS);
          cut.unref();
          timers.push(cut);
        });
    }, options.graceMs);
    grace.unref();
    timers.push(grace);
  });
  app.addHook("onClose", async () => {
    for (const timer of timers) clearTimeout(timer);
  });
}
