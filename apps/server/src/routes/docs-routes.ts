import { buildOpenApiDocument } from "@shells/contract";
import type { FastifyInstance } from "fastify";
import { sql, type Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { RegionPools } from "../orchestrator/region-pools.js";
import type { RuntimeRegistry } from "../orchestrator/runtimes.js";
import type { Database } from "../store/schema.js";
import { renderDocsPage } from "./docs-page.js";
import type { Handlers } from "./register-routes.js";

/**
 * Liveness, and readiness: the store answers, which runtime classes this host can run, and the
 * regions of its backend pools with each limited class's use.
 */
export function healthHandlers(
  db: Kysely<Database>,
  runtimes: RuntimeRegistry,
  pools: RegionPools,
): Pick<Handlers, "health" | "ready"> {
  return {
    health: async () => ({ status: "ok" }),
    ready: async () => {
      try {
        await sql`select 1`.execute(db);
      } catch (error) {
        throw new AppError("not_ready", "The store does not answer.", undefined, { cause: error });
      }
      return {
        status: "ready",
        runtimes: await runtimes.availability(),
        region: pools.defaultRegion,
        regions: [...pools.regions],
        capacity: await pools.capacity(),
      };
    },
  };
}

/** Registers `GET /openapi.json` (built from the route table) and the `/docs` page over it. */
export function registerDocsRoutes(app: FastifyInstance, version: string): void {
  const openapi = buildOpenApiDocument({ version });
  const docsHtml = renderDocsPage(openapi);
  app.get("/openapi.json", async () => openapi);
  app.get("/docs", async (_request, reply) =>
    reply.type("text/html; charset=utf-8").send(docsHtml),
  );
}
