import type { FastifyInstance } from "fastify";
import { createHash, timingSafeEqual } from "node:crypto";
import { AppError } from "../errors.js";
import { UNMATCHED_ROUTE, type ServerMetrics } from "../metrics/server-metrics.js";

/** The path Prometheus scrapes. */
export const METRICS_PATH = "/metrics";

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/**
 * Times every response by its route pattern, and serves `GET /metrics` in the Prometheus text
 * format to a scraper that presents `Authorization: Bearer <metricsToken>`.
 *
 * The metrics describe the whole server — every org's shells — so they are not an org's to read:
 * no API key or session opens them, only the operator's token. Without a configured token the
 * path is not served at all (404): metrics are off until the operator turns them on.
 */
export function registerMetrics(
  app: FastifyInstance,
  metrics: ServerMetrics,
  metricsToken: string | undefined,
): void {
  app.addHook("onResponse", async (request, reply) => {
    metrics.observeRequest(
      request.method,
      request.routeOptions.url ?? UNMATCHED_ROUTE,
      reply.statusCode,
      reply.elapsedTime / 1000,
    );
  });
  const expected = metricsToken === undefined ? null : digest(metricsToken);
  app.get(METRICS_PATH, async (request, reply) => {
    if (!expected) {
      throw new AppError(
        "route_not_found",
        "Metrics are off on this server: the operator turns them on with SHELLS_METRICS_TOKEN.",
      );
    }
    const match = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization?.trim() ?? "");
    // Compared as digests: equal length, constant time, whatever was presented.
    if (!match?.[1] || !timingSafeEqual(digest(match[1]), expected)) {
      throw new AppError(
        "unauthenticated",
        "Metrics need `Authorization: Bearer <SHELLS_METRICS_TOKEN>`.",
      );
    }
    const body = await metrics.render();
    return reply.type(metrics.registry.contentType).header("cache-control", "no-store").send(body);
  });
}
