import { describe, expect, it } from "vitest";
import {
  ERROR_CODES,
  ERROR_STATUS,
  ROUTES,
  buildOpenApiDocument,
  openApiPath,
  type RouteSpec,
} from "./index.js";
import { agentRoutes } from "./routes/agent-routes.js";
import { approvalRoutes } from "./routes/approval-routes.js";
import { bindingRoutes } from "./routes/bindings-routes.js";
import { templateRoutes } from "./routes/templates-routes.js";
import { auditRoutes } from "./routes/audit-routes.js";
import { fileRoutes } from "./routes/file-routes.js";
import { iamRoutes } from "./routes/iam-routes.js";
import { orgRoutes } from "./routes/org-routes.js";
import { runRoutes } from "./routes/run-routes.js";
import { shellRoutes } from "./routes/shell-routes.js";
import { systemRoutes } from "./routes/system-routes.js";
import { terminalRoutes } from "./routes/terminal-routes.js";
import { webhooksRoutes } from "./routes/webhooks-routes.js";
import { usageRoutes } from "./routes/usage-routes.js";

const routes = Object.entries(ROUTES as Record<string, RouteSpec>);

describe("the contract", () => {
  it("answers every error code with a 4xx or 5xx status", () => {
    for (const code of ERROR_CODES) {
      expect(ERROR_STATUS[code], code).toBeGreaterThanOrEqual(400);
      expect(ERROR_STATUS[code], code).toBeLessThan(600);
    }
  });

  it("takes every route from exactly one area table", () => {
    const areas = [
      systemRoutes,
      shellRoutes,
      fileRoutes,
      terminalRoutes,
      runRoutes,
      orgRoutes,
      bindingRoutes,
      templateRoutes,
      auditRoutes,
      iamRoutes,
      approvalRoutes,
      webhooksRoutes,
      agentRoutes,
      usageRoutes,
    ];
    const fromAreas = areas.flatMap((area) => Object.keys(area));
    // A key repeated in two areas would silently replace the first route when they are merged.
    expect(fromAreas).toEqual(Object.keys(ROUTES));
  });

  it("gives each route its own method and path", () => {
    const seen = new Map<string, string>();
    for (const [operationId, route] of routes) {
      const key = `${route.method} ${route.path}`;
      expect(seen.get(key), `${operationId} repeats ${key}`).toBeUndefined();
      seen.set(key, operationId);
    }
  });

  it("declares a schema for exactly the parameters each path names", () => {
    for (const [operationId, route] of routes) {
      const named = [...route.path.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1]).sort();
      const declared = Object.keys(route.params?.shape ?? {}).sort();
      expect(declared, operationId).toEqual(named);
    }
  });

  it("documents every route in the OpenAPI document under its operation id", () => {
    const document = buildOpenApiDocument({ version: "test" }) as {
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    for (const [operationId, route] of routes) {
      const operation = document.paths[openApiPath(route.path)]?.[route.method.toLowerCase()];
      expect(operation?.operationId, operationId).toBe(operationId);
    }
  });
});
