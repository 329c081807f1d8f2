import type { FastifyInstance } from "fastify";
import type { OidcAuth } from "../iam/oidc/oidc-auth.js";

/** What `GET /auth/config` answers: whether the console should offer an OIDC login, and where. */
export interface AuthConfigResponse {
  oidcEnabled: boolean;
  loginUrl: string | null;
  logoutUrl: string | null;
}

/**
 * Registers the public `GET /auth/config`, and with OIDC `GET /auth/login`, `GET /auth/callback`
 * and `POST /auth/logout` (outside /api/v1 and the route table; see docs/architecture.md). Login
 * and callback are anonymous and each writes or consumes a row, so they are rate-limited per
 * address (`failureLimit` per `windowMs`).
 */
export function registerAuthRoutes(
  app: FastifyInstance,
  oidc: OidcAuth | null,
  limit: { failureLimit: number; windowMs: number },
): void {
  const body: AuthConfigResponse = oidc
    ? { oidcEnabled: true, loginUrl: "/auth/login", logoutUrl: "/auth/logout" }
    : { oidcEnabled: false, loginUrl: null, logoutUrl: null };
  app.get("/auth/config", async () => body);
  if (!oidc) return;
  const config = { rateLimit: { max: limit.failureLimit, timeWindow: limit.windowMs } };
  app.get("/auth/login", { config }, async (request, reply) => oidc.login(request, reply));
  app.get("/auth/callback", { config }, async (request, reply) => oidc.callback(request, reply));
  app.post("/auth/logout", async (request, reply) => oidc.logout(request, reply));
}
