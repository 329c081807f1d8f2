import type { FastifyInstance } from "fastify";
import type { TermService } from "../orchestrator/term-service.js";
import type { Handlers } from "./register-routes.js";

/**
 * Terminal credentials. The attach URL comes from configuration (or the listening address), never
 * from the request's `Host`.
 */
export function terminalHandlers(
  terms: TermService,
  baseUrl: () => string,
): Pick<Handlers, "mintTermCredential"> {
  return {
    mintTermCredential: async ({ caller, params }) => terms.mint(caller, params.id, baseUrl()),
  };
}

/** Registers the terminal attach WebSocket (after `@fastify/websocket`). */
export function registerTerminalAttach(app: FastifyInstance, terms: TermService): void {
  terms.register(app);
}
